"""Multi-host state: overlay networks, services and their endpoints in etcd."""
