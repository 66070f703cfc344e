"""Real processes for the bench and the tests to run against: netdns daemons on their own roots
(`daemon`), a cluster of host namespaces over a real etcd (`cluster`, `etcd`), and upstream
servers (`upstreams`: dnsmasq, and stand-ins that misbehave on purpose). The tests import them
from here; nothing here imports the tests."""
