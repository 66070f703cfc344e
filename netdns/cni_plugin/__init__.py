"""netdns-cni: a CNI 1.0 chained plugin that gives containers wired by CNI netdns's names.

It runs after the plugins that make the container's interface and address (for example the
reference `bridge` with `host-local` IPAM) and, through the daemon's admin API:

- ADD registers the container with the addresses of the previous result (`prevResult`) on a
  netdns network of driver `cni` named after the CNI network (created on first use, from the
  result's subnets), adopting CNI_NETNS, so netdns injects 127.0.0.11 there as for any adopted
  namespace; it prints the previous result with `dns.nameservers` set to 127.0.0.11.
- DEL removes that registration (or only this network's attachment); missing is success.
- CHECK verifies the registration (namespace, addresses) and that 127.0.0.11 answers inside the
  namespace with the container's own address.
- VERSION answers the spec versions it speaks.

Modules: spec (the parsing, the choice of name and aliases and the result: pure functions,
tested in tests/unit/test_cni_plugin.py), registrar (the daemon calls), probe (CHECK's query
inside the namespace), main (the executable: `netdns-cni`, or `python -m netdns.cni_plugin`).
Errors are the spec's error object on stdout with a non-zero exit; logs go to stderr. See
docs/CNI.md.
"""

from netdns.cni_plugin.main import main
from netdns.cni_plugin.registrar import Registrar, check_network, daemon_error, daemon_host
from netdns.cni_plugin.spec import (
    CniError,
    Command,
    Config,
    ContainerAddresses,
    Env,
    ErrorCode,
    build_result,
    config_version,
    container_addresses,
    container_aliases,
    container_name,
    error_result,
    parse_cni_args,
    parse_config,
    parse_env,
    version_result,
)

__all__ = [
    "CniError",
    "Command",
    "Config",
    "ContainerAddresses",
    "Env",
    "ErrorCode",
    "Registrar",
    "build_result",
    "check_network",
    "config_version",
    "container_addresses",
    "container_aliases",
    "container_name",
    "daemon_error",
    "daemon_host",
    "error_result",
    "main",
    "parse_cni_args",
    "parse_config",
    "parse_env",
    "version_result",
]
