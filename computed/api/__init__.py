"""Generated gRPC/protobuf modules only (python -m computed.api.regen); do not edit."""
