"""The roles a certificate can carry and the default lifetimes. Imports nothing heavy, so
computectl can build its parser without loading the cryptography library."""

GRPC_ROLES = ("admin", "reader", "scheduler", "agent")
ETCD_ROLES = ("etcd-root", "etcd-server")
ROLES = GRPC_ROLES + ETCD_ROLES
SERVER_ROLES = ("scheduler", "agent", "etcd-server")  # they serve, so they need SANs
CA_DAYS = 3650
CERT_DAYS = 365
