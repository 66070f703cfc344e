"""The program around the DNS server (resolver/) and the driver core (drivers/): the daemon that
composes them, its admin API and page, the `netdns` CLI and its client, the CNI plugin, the
event log, the metrics collector and the log output."""
