"""What `pip install .` gives: the `netdns` and `netdns-cni` commands and a version; and the
systemd unit in contrib/ that starts the daemon."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # Offline: the build backend is already in the venv, dependencies are not fetched.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (built,) = out.glob("netdns-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_installs_the_three_commands(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith("entry_points.txt")]
    parser = ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == {
        "netdns": "netdns.cli:main",
        "netdns-cni": "netdns.cni_plugin:main",
        "netdns-aardvark": "netdns.aardvark.main:main",
    }


def test_the_wheel_carries_the_packages(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    shipped = (
        "netdns/cli/main.py",
        "netdns/cni_plugin/main.py",
        "netdns/aardvark/main.py",
        "resolver/resolve.py",
        "drivers/core/driver_core.py",
        "drivers/cluster/store.py",
        "drivers/overlay.py",
    )
    for module in shipped:
        assert module in names
    assert not any(n.startswith("tests/") for n in names)


def test_the_wheel_carries_the_admin_page(wheel: zipfile.ZipFile) -> None:
    # Every file the page is made of, so an installed daemon serves the same page as a checkout.
    shipped = {p.name for p in (ROOT / "netdns" / "static").iterdir()}
    assert {"index.html", "app.js"} <= shipped
    assert {f"netdns/static/{name}" for name in shipped} <= set(wheel.namelist())


def test_version_flag_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "netdns.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    name, version = done.stdout.split()
    assert name == "netdns" and version[0].isdigit()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_verifies_and_starts_the_daemon(tmp_path: Path) -> None:
    unit = (ROOT / "contrib" / "netdns.service").read_text()
    parser = ConfigParser(strict=False, interpolation=None)
    parser.read_string(unit)
    assert parser["Service"]["ExecStart"].split()[1:3] == ["daemon", "$NETDNS_ARGS"]
    # systemd-analyze checks that the command exists: point it at one that does.
    command = parser["Service"]["ExecStart"].split()[0]
    copy = tmp_path / "netdns.service"
    copy.write_text(unit.replace(command, shutil.which("true") or "/bin/true"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
