"""computectl: the operator's command-line client, over the public gRPC API only."""
