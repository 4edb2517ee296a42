"""Generated gRPC stubs; written by scripts/generate_proto.py."""
