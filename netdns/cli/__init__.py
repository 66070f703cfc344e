"""The `netdns` command: docker's words for networks, containers and services, over the admin
API. One module per noun or group of verbs, each registering its parser next to its handlers:
network, container, service, observe (resolve, events, querylog), run (exec, demo, daemon);
command holds what they share, main builds the parser and runs a verb.

Every command talks to the daemon through netdns.client (except `daemon`, which is the
daemon, and `exec`, which also runs a process in the container's namespace). Output is a table
or text by default and JSON with `--format json`; `inspect` always prints a JSON array, as
docker does. Failures print one line, `netdns: <reason>`, on stderr and exit with the code of
the error's class (drivers/errors.py), mapped from the API's HTTP status in one place
(`command.exit_code`).
"""

from netdns.cli.command import exit_code
from netdns.cli.main import build_parser, main
from netdns.cli.network import option_pairs
from netdns.cli.run import exec_argv

__all__ = ["build_parser", "exec_argv", "exit_code", "main", "option_pairs"]
