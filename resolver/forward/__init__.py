"""Forwarding of names that are not local: upstreams, their order and health, the answer cache.

One concern per module: `upstream` (one exchange with one server), `policy` (order, health,
budget shares, TCP retry), `cache` (R13), `hostconf` (the host's resolv.conf, followed live) and
`forwarder` (the Forwarder that puts them together, with the in-flight cap of R14).
"""

from resolver.forward.cache import AnswerCache
from resolver.forward.forwarder import Forwarder, ForwardResult
from resolver.forward.hostconf import HostResolvConf

__all__ = ["AnswerCache", "ForwardResult", "Forwarder", "HostResolvConf"]
