"""What the daemon keeps per network or container must go when they go: after churn, the
structures behind the event log hold as many entries as before it (counted, not measured in
bytes). The churn comes from a real DriverCore (test doubles for the kernel) feeding a real
EventLog, as in the daemon.
"""

from __future__ import annotations

import json
from pathlib import Path

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec
from drivers.local_store import LocalStore
from drivers.model import Driver
from netdns.events import EventLog
from tests.unit.doubles import PathNamespaces, QuietDriver

CYCLES = 200


def churned_core(tmp_path: Path, log: EventLog) -> DriverCore:
    core = DriverCore(
        LocalStore(tmp_path / "state"), {k: QuietDriver(k) for k in Driver}, PathNamespaces()
    )
    core.subscribe(log.append)
    core.start()
    return core


def test_event_log_forgets_the_name_of_a_removed_network(tmp_path):
    log = EventLog(capacity=50)  # a small ring: only the name memory could grow
    core = churned_core(tmp_path, log)
    core.create_network(NetworkSpec("app"))
    core.create_sandbox(SandboxSpec("stable", network="app"))
    names_before = len(log._network_names)  # the only place it shows: no API lists it
    for n in range(CYCLES):
        core.create_network(NetworkSpec(f"churn{n}"))
        core.connect(ConnectSpec(f"churn{n}", "stable"))
        core.disconnect(f"churn{n}", "stable")
        core.remove_network(f"churn{n}")
    assert len(log._network_names) == names_before
    # The lines still name the network: the removal's own, and the detach just before it.
    *_, detach, removal = (json.loads(r.line) for r in log.records())
    assert (detach["type"], detach["network"]) == ("endpoint.detach", f"churn{CYCLES - 1}")
    assert (removal["type"], removal["network"]) == ("network.remove", f"churn{CYCLES - 1}")


def test_event_log_still_names_a_live_network_after_others_were_removed(tmp_path):
    log = EventLog(capacity=50)
    core = churned_core(tmp_path, log)
    core.create_network(NetworkSpec("app"))
    for n in range(3):
        core.create_network(NetworkSpec(f"gone{n}"))
        core.remove_network(f"gone{n}")
    core.create_sandbox(SandboxSpec("late", network="app"))
    attach = json.loads(log.records()[-1].line)
    assert (attach["type"], attach["container"], attach["network"]) == (
        "endpoint.attach",
        "late",
        "app",
    )
