"""The etcd keyspace in one place: key builders, typed records, the client wrapper.

Submodules are imported by name (`from computed.store.client import Store`):
`keys`, `records` and `stats` are pure and cheap; only `client` and `lease`
pull in gRPC and the etcd client, so scheduler filters and other pure code
can use the records without paying for them.
"""
