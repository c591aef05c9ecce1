"""Guest images: the ABI header, the bundled guests' C sources and where their builds live."""
