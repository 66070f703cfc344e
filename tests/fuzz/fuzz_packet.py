"""The atheris harness over tests/fuzz/target.py (coverage-guided, libFuzzer underneath).

    python -m tests.fuzz.fuzz_packet [libFuzzer flags] [corpus dirs]
    python -m tests.fuzz.fuzz_packet NEW_DIR tests/fuzz/corpus -max_total_time=60
    python -m tests.fuzz.fuzz_packet --write-seeds tests/fuzz/corpus

libFuzzer writes what it finds into the first corpus directory: give a scratch one first and
the repository's corpus after it (scripts/fuzz-smoke does). resolver.* and dnslib are
instrumented for coverage; a Mismatch or any other exception from the target is a crash, and
libFuzzer saves the input as crash-<sha1> (see -artifact_prefix).
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["resolver", "dnslib"]):
    from tests.fuzz.target import check_input, seed_inputs


def test_one_input(data: bytes) -> None:
    check_input(data)


def write_seeds(directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seed_inputs().items():
        (directory / f"seed_{name}").write_bytes(data)


def relauncher() -> str:
    """An executable that runs this harness again: libFuzzer's -merge (and -fork, -jobs) starts
    argv[0] as a program, and under `python -m` argv[0] is this file, which is not one."""
    root = pathlib.Path(__file__).resolve().parents[2]
    handle, path = tempfile.mkstemp(prefix="netdns-fuzz-", suffix=".sh")
    with os.fdopen(handle, "w") as script:
        command = f'exec "{sys.executable}" -m tests.fuzz.fuzz_packet "$@"'
        script.write(f'#!/bin/sh\ncd "{root}" && {command}\n')
    os.chmod(path, 0o755)
    return path


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-seeds":
        write_seeds(pathlib.Path(argv[2]))
        return
    if any(arg.split("=")[0] in ("-merge", "-fork", "-jobs", "-workers") for arg in argv[1:]):
        argv = [relauncher(), *argv[1:]]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
