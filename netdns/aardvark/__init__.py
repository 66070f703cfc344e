"""netdns-aardvark: netdns in place of aardvark-dns under podman's netavark.

netavark writes one file per network into a directory and runs `aardvark-dns --config DIR -p
PORT run`, then sends SIGHUP after every change. netdns-aardvark takes the same command line,
reads the same files, turns their differences into netdns's events (so the name table follows
them as it follows the daemon's), serves on each network's gateway addresses, and answers each
container by its source address. Modules: config (the files, read and checked), state (the
model they describe and the events between two readings), service (the listeners and the
reload), main (the command line, the fork, SIGHUP).
"""
