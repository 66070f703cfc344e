"""`netdns daemon`: flags (the flags and the configuration they make), composition (the
Daemon: every part built and wired; also the admin API's operations), auth (the admin token),
main (running it until a signal)."""

from netdns.daemon.composition import Daemon
from netdns.daemon.flags import DaemonConfig, add_arguments, config_from_args
from netdns.daemon.main import main

__all__ = ["Daemon", "DaemonConfig", "add_arguments", "config_from_args", "main"]
