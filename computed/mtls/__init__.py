"""Mutual TLS for the gRPC hops: credentials that reload on SIGHUP, and role checks."""
