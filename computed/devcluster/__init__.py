"""The dev cluster: N agent hosts in network namespaces, etcd and schedulers, on one machine."""
