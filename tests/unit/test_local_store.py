"""The local store (drivers/local_store.py): JSON round trips of every model type, atomic saves."""

from __future__ import annotations

import json
import os
import signal
import stat
from collections import Counter
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from drivers.core import ConnectSpec, DriverCore, NetworkSpec, SandboxSpec, ServiceSpec
from drivers.errors import Conflict, Invalid, Unsupported
from drivers.local_store import (
    INTENT_FILE,
    LOCK_FILE,
    SCHEMA_VERSION,
    STATE_FILE,
    Intent,
    LocalStore,
    State,
    state_to_json,
)
from drivers.model import (
    Driver,
    Endpoint,
    EndpointMode,
    IPAMConfig,
    Network,
    Sandbox,
    Scope,
    Service,
    ServicePort,
    Task,
    VirtualIP,
)


def full_state() -> State:
    net = Network(
        id="n" * 64, name="front", driver=Driver.OVERLAY, scope=Scope.GLOBAL, dns=True,
        internal=True, attachable=True, ipv6=True,
        ipam=(
            IPAMConfig(IPv4Network("10.1.0.0/16"), IPv4Address("10.1.0.1"),
                       IPv4Network("10.1.4.0/24")),
            IPAMConfig(IPv6Network("fd00:1::/64"), IPv6Address("fd00:1::1")),
        ),
        options=(("parent", "eth0.50"), ("mtu", "1400")), dns_servers=("10.1.0.53",),
        created="2024-01-01T00:00:00+00:00",
    )  # fmt: skip
    other = Network(id="m" * 64, name="bridge", driver=Driver.BRIDGE, dns=False)
    sandbox = Sandbox(
        id="s" * 64, name="web", netns="/run/netns/web", hostname="www",
        dns_servers=("10.0.0.1:5353",), dns_search=("corp",), dns_options=("ndots:2",),
    )  # fmt: skip
    plain = Endpoint(id="e" * 64, network_id=other.id, sandbox_id=sandbox.id, name="web")
    task = Endpoint(
        id="f" * 64, network_id=net.id, sandbox_id=sandbox.id, name="web", hostname="www",
        aliases=("w", "web.alias"), ipv4=IPv4Address("10.1.4.2"), ipv6=IPv6Address("fd00:1::2"),
        mac="02:42:0a:01:04:02", task=Task("v" * 64, "api", 3, "t" * 25),
    )  # fmt: skip
    service = Service(
        id="v" * 64, name="api", networks=(net.id,), mode=EndpointMode.DNSRR,
        vips=(VirtualIP(net.id, IPv4Address("10.1.0.9")),),
        ports=(ServicePort("http", "tcp", 80),), replicas=3,
    )  # fmt: skip
    return State(
        networks={net.id: net, other.id: other},
        sandboxes={sandbox.id: sandbox},
        endpoints={task.id: task, plain.id: plain},  # connect order, not id order
        services={service.id: service},
        made_netns={sandbox.id: "web"},
    )


def test_empty_root_loads_an_empty_state(tmp_path):
    assert LocalStore(tmp_path / "missing").load() == State()


def test_every_model_type_round_trips_with_order_kept(tmp_path):
    state = full_state()
    LocalStore(tmp_path).save(state)
    loaded = LocalStore(tmp_path).load()
    assert loaded == state
    assert list(loaded.endpoints) == list(state.endpoints)
    assert list(loaded.networks) == list(state.networks)
    # the values have their real types again, not strings
    endpoint = loaded.endpoints["f" * 64]
    assert isinstance(endpoint.ipv6, IPv6Address) and isinstance(endpoint.task, Task)
    assert loaded.networks["n" * 64].driver is Driver.OVERLAY


def test_file_is_plain_json_with_schema_strings_and_enum_values(tmp_path):
    LocalStore(tmp_path).save(full_state())
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["schema"] == SCHEMA_VERSION
    net = data["networks"][0]
    assert net["driver"] == "overlay" and net["scope"] == "global"
    assert net["ipam"][0] == {"subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
                              "ip_range": "10.1.4.0/24"}  # fmt: skip
    assert data["endpoints"][0]["ipv6"] == "fd00:1::2"
    assert data["endpoints"][1]["ipv4"] is None


def test_save_replaces_the_file_whole_leaves_no_temporary_and_is_private(tmp_path):
    store = LocalStore(tmp_path)
    store.save(full_state())
    store.save(State())
    assert os.listdir(tmp_path) == [STATE_FILE]
    assert store.load() == State()
    assert stat.S_IMODE(os.stat(tmp_path / STATE_FILE).st_mode) & 0o077 == 0


def test_failed_save_keeps_the_previous_state(tmp_path):
    store = LocalStore(tmp_path)
    store.save(full_state())
    broken = full_state()
    broken.sandboxes["x"] = Sandbox(id="x", name=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.save(broken)
    assert store.load() == full_state()
    assert os.listdir(tmp_path) == [STATE_FILE]


def test_corrupt_file_is_invalid_naming_the_file(tmp_path):
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(Invalid, match=f"{tmp_path / STATE_FILE}.*move it aside"):
        LocalStore(tmp_path).load()


def test_wrong_type_in_file_is_invalid(tmp_path):
    LocalStore(tmp_path).save(full_state())
    data = json.loads((tmp_path / STATE_FILE).read_text())
    data["endpoints"][0]["ipv4"] = "not-an-address"
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    with pytest.raises(Invalid):
        LocalStore(tmp_path).load()


def test_newer_schema_is_unsupported(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"schema": SCHEMA_VERSION + 1}))
    with pytest.raises(Unsupported, match="newer"):
        LocalStore(tmp_path).load()


def test_missing_fields_take_their_defaults_and_unknown_fields_are_ignored(tmp_path):
    data = {
        "schema": SCHEMA_VERSION,
        "networks": [{"id": "a" * 64, "name": "n", "driver": "bridge", "from_the_future": 1}],
        "sandboxes": [{"id": "b" * 64, "name": "c"}],
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(data))
    state = LocalStore(tmp_path).load()
    assert state.networks["a" * 64] == Network(id="a" * 64, name="n", driver=Driver.BRIDGE)
    assert state.sandboxes["b" * 64] == Sandbox(id="b" * 64, name="c")
    assert state.endpoints == {} and state.made_netns == {}


def test_copy_is_independent():
    state = full_state()
    copy = state.copy()
    copy.networks.clear()
    copy.made_netns.clear()
    assert len(state.networks) == 2 and state.made_netns


# -- crash safety (issue 7): atomic saves, torn files, the lock, intents ----------------------


def test_save_writes_a_temporary_beside_fsyncs_renames_then_fsyncs_the_directory(
    tmp_path, monkeypatch
):
    # Spies that call through: the order of the real calls is what makes a save atomic.
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        calls.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    LocalStore(tmp_path).save(full_state())
    (_, first), (_, renamed), (_, last) = calls
    assert [c for c, _ in calls] == ["fsync", "replace", "fsync"]
    src, dst = renamed.split(" -> ")
    assert os.path.dirname(src) == str(tmp_path) and first == src
    assert dst == str(tmp_path / STATE_FILE)
    assert last == str(tmp_path)


_SAVER = """
import sys
from pathlib import Path
from drivers.local_store import LocalStore, State
from drivers.model import Sandbox
store = LocalStore(Path(sys.argv[1]))
print("ready", flush=True)
i = 0
while True:
    i += 1
    size = 1 + i % 300   # states of different sizes: a torn write would show
    store.save(State(sandboxes={f"{n:064x}": Sandbox(id=f"{n:064x}", name=f"c{n}")
                                for n in range(size)}))
"""


def test_sigkill_during_saves_leaves_a_whole_state_every_time(tmp_path):
    """A process saving as fast as it can is killed 8 times at random moments; each time
    the file loads whole (one of the states saved), never torn."""
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(7)
    sizes = set()
    for _ in range(8):
        saver = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(tmp_path)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        try:
            assert saver.stdout is not None and saver.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.01, 0.15))
        finally:
            saver.send_signal(signal.SIGKILL)
            saver.wait(timeout=10)
        state = LocalStore(tmp_path).load()
        assert all(s.name == f"c{int(i, 16)}" for i, s in state.sandboxes.items())
        sizes.add(len(state.sandboxes))
    assert len(sizes) > 1  # the kills did land in different saves
    LocalStore(tmp_path).lock()  # the next start clears the temporaries a kill left
    assert set(os.listdir(tmp_path)) == {LOCK_FILE, STATE_FILE}


def _garbage() -> list[bytes]:
    good = json.dumps(state_to_json(full_state()), indent=1).encode()
    cuts = sorted({0, 1, 2, len(good) // 2, len(good) - 2, len(good) - 1, *range(7, len(good), 97)})
    return [
        *(good[:cut] for cut in cuts),  # torn at many places
        b"\x00" * 4096,  # a block that never got its data
        b"\xff\xfe\xfa garbage",  # not UTF-8
        b"[" * 100_000,  # nesting deeper than the parser goes
        b"null",
        b"[]",
        b'{"schema": 1, "networks": 5}',
        b'{"schema": 1, "sandboxes": "abc"}',
        b'{"schema": 1, "networks": [{"id": "x"}]}',
        b'{"schema": 1, "endpoints": [{"id": 5, "network_id": "n", "sandbox_id": "s"}]}',
        b'{"schema": 1, "made_netns": []}',
        b'{"schema": "1"}',
    ]


def test_torn_or_garbage_state_file_is_a_clear_error_naming_it(tmp_path):
    for data in _garbage():
        (tmp_path / STATE_FILE).write_bytes(data)
        with pytest.raises(Invalid, match=f"state file {tmp_path / STATE_FILE}.*move it aside"):
            LocalStore(tmp_path).load()


def test_unreadable_state_file_is_a_clear_error(tmp_path):
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(Invalid, match=f"state file {tmp_path / STATE_FILE} cannot be read"):
        LocalStore(tmp_path).load()


_LOCKER = """
import sys
from pathlib import Path
from drivers.local_store import LocalStore
from drivers.errors import Conflict
try:
    LocalStore(Path(sys.argv[1])).lock()
except Conflict as exc:
    print(exc)
    sys.exit(3)
print("locked", flush=True)
sys.stdin.read()  # holds the lock until the test closes stdin
"""


def _locker(root: Path):
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(root)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip


def test_second_process_on_one_root_is_refused_naming_root_and_pid(tmp_path):
    holder = _locker(tmp_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        second = _locker(tmp_path)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 3
        assert f"--root {tmp_path} is in use" in out and f"pid {holder.pid}" in out
    finally:
        holder.communicate(timeout=30)  # closes stdin: it exits, and the lock goes with it
    third = _locker(tmp_path)
    assert third.stdout is not None and third.stdout.readline() == "locked\n"
    third.communicate(timeout=30)


def test_one_process_may_lock_its_root_twice(tmp_path):
    LocalStore(tmp_path).lock()
    LocalStore(tmp_path).lock()  # a DriverCore restarted in place (tests) keeps working
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_intent_round_trips_and_end_removes_it(tmp_path):
    state = full_state()
    intent = Intent(
        "container rm",
        removing=True,
        networks=tuple(state.networks.values()),
        sandboxes=tuple(state.sandboxes.values()),
        endpoints=tuple(state.endpoints.values()),
        netns=(("s" * 64, "web"),),
    )
    store = LocalStore(tmp_path)
    assert store.pending() is None
    store.begin(intent)
    assert LocalStore(tmp_path).pending() == intent
    store.end()
    assert store.pending() is None
    store.end()  # twice is fine


def test_unreadable_intent_is_set_aside_and_logged_not_fatal(tmp_path, caplog):
    (tmp_path / INTENT_FILE).write_bytes(b'{"op": "connect", "endpoints": [{"id"')
    assert LocalStore(tmp_path).pending() is None
    assert (tmp_path / f"{INTENT_FILE}.bad").exists() and not (tmp_path / INTENT_FILE).exists()
    assert "intent file" in caplog.text and "left over" in caplog.text


# -- recovery at start: a DriverCore killed mid-change (SIGKILL in a forked child) -------------


class FileNamespaces:
    """Named namespaces as files in a directory: they outlive the killed process, as the
    kernel's do."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(exist_ok=True)

    def create(self, name: str) -> str:
        path = self.run_dir / name
        if path.exists():
            raise Conflict(f"namespace {name} exists")
        path.touch()
        return str(path)

    def remove(self, name: str) -> None:
        (self.run_dir / name).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def names(self) -> set[str]:
        return set(os.listdir(self.run_dir))


class FileDriver:
    """Links as files `<endpoint id>` in a directory; SIGKILLs its own process in the call
    named by `kill_in` ("join", or "join#2" for the second join), right after doing it."""

    def __init__(self, kind: Driver, links: Path, kill_in: str = "") -> None:
        self.kind = kind
        self.links = links
        self.kill_in = kill_in
        self.calls: Counter[str] = Counter()
        links.mkdir(exist_ok=True)

    def _maybe_die(self, call: str) -> None:
        self.calls[call] += 1
        # Network calls are named with their network: "call:name".
        if self.kill_in in (call, f"{call}#{self.calls[call]}"):
            os.kill(os.getpid(), signal.SIGKILL)

    def check_supported(self) -> None:
        pass

    def validate(self, network: Network) -> None:
        pass

    def create_network(self, network: Network) -> None:
        (self.links / f"br-{network.name}").touch()
        self._maybe_die(f"create_network:{network.name}")

    def remove_network(self, network: Network) -> None:
        (self.links / f"br-{network.name}").unlink(missing_ok=True)
        self._maybe_die(f"remove_network:{network.name}")

    def join(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> Endpoint:
        (self.links / endpoint.id).touch()
        self._maybe_die("join")
        return endpoint

    def leave(self, network: Network, endpoint: Endpoint, sandbox: Sandbox) -> None:
        (self.links / endpoint.id).unlink(missing_ok=True)
        self._maybe_die("leave")

    def made(self) -> set[str]:
        return set(os.listdir(self.links))


def _core(tmp_path: Path, kill_in: str = "") -> tuple[DriverCore, FileNamespaces, FileDriver]:
    namespaces = FileNamespaces(tmp_path / "netns")
    bridge = FileDriver(Driver.BRIDGE, tmp_path / "links", kill_in)
    core = DriverCore(LocalStore(tmp_path / "root"), {Driver.BRIDGE: bridge}, namespaces)
    return core, namespaces, bridge


def _killed_in(tmp_path: Path, kill_in: str, change) -> None:
    """Run `change(core)` in a forked child whose driver SIGKILLs it in `kill_in`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            core, _, _ = _core(tmp_path, kill_in)
            core.start()
            change(core)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def _prepare(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            core, _, _ = _core(tmp_path)
            core.start()
            core.create_network(NetworkSpec("app", subnets=("10.9.0.0/24",)))
            core.create_sandbox(SandboxSpec("web", network="app"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _whole(core: DriverCore, namespaces: FileNamespaces, bridge: FileDriver) -> None:
    """What the core lists is what exists, and nothing else exists."""
    assert namespaces.names() == {s.name for s in core.sandboxes()}
    user_networks = {f"br-{n.name}" for n in core.networks() if n.driver is Driver.BRIDGE}
    assert bridge.made() == {e.id for e in core.endpoints()} | user_networks
    assert not (core._store.intent_path.exists())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kill_in", "change", "listed"),
    [
        ("join", lambda c: c.create_sandbox(SandboxSpec("db", network="app")), {"web"}),
        ("join", lambda c: c.connect(ConnectSpec("bridge", "web")), {"web"}),
        ("leave", lambda c: c.remove_sandbox("web"), set()),
        ("leave", lambda c: c.disconnect("app", "web"), {"web"}),
        ("create_network:db-net", lambda c: c.create_network(NetworkSpec("db-net")), {"web"}),
        ("remove_network:db-net", lambda c: c.remove_network("db-net"), {"web"}),
        # Killed while the second of three tasks joins: no task was saved, none may be left.
        (
            "join#2",
            lambda c: c.create_service(ServiceSpec("api", ("app",), 3, "dnsrr")),
            {"web"},
        ),
    ],
    ids=["create", "connect", "rm", "disconnect", "net-create", "net-rm", "service-create"],
)
def test_change_killed_mid_way_is_done_wholly_or_not_at_all_after_restart(
    tmp_path, kill_in, change, listed
):
    _prepare(tmp_path)
    if kill_in.startswith("remove_network"):
        pid = os.fork()
        if pid == 0:
            try:
                core, _, _ = _core(tmp_path)
                core.start()
                core.create_network(NetworkSpec("db-net"))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    _killed_in(tmp_path, kill_in, change)
    core, namespaces, bridge = _core(tmp_path)
    core.start()
    assert {s.name for s in core.sandboxes()} == listed
    _whole(core, namespaces, bridge)
    if kill_in == "leave" and listed:  # the disconnect was finished: web is on no network
        assert core.endpoints(sandbox_id=core.sandbox("web").id) == []
    # the CLI can finish the job: the names are free again
    core.create_sandbox(SandboxSpec("db", network="app"))
    for sandbox in core.sandboxes():
        core.remove_sandbox(sandbox.id)
    _whole(core, namespaces, bridge)
