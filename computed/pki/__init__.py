"""The cluster PKI: a CA, and certificates whose subject names identity (CN) and role (OU)."""
