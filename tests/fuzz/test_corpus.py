"""Every fuzz corpus input replayed through the fuzz target (R10, R15, R16, hot == slow).

tests/fuzz/corpus holds the seeds (tests.fuzz.target.seed_inputs), the malformed cases of
tests/proto/test_malformed.py and what the fuzzer found.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.fuzz.target import check_input, seed_inputs
from tests.proto.test_malformed import CORPUS as MALFORMED

HERE = pathlib.Path(__file__).parent
CORPUS = sorted((HERE / "corpus").iterdir())


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_r16_corpus_input_gets_its_answer_and_hot_path_agrees(path: pathlib.Path) -> None:
    check_input(path.read_bytes())


def test_corpus_holds_every_seed_and_every_malformed_case() -> None:
    contents = {path.read_bytes() for path in CORPUS}
    missing = [name for name, data in seed_inputs().items() if data not in contents]
    assert not missing, "run: python -m tests.fuzz.fuzz_packet --write-seeds tests/fuzz/corpus"
    udp = {b"\x00" + case.packet for case in MALFORMED}
    assert udp <= contents, "malformed cases of tests/proto/test_malformed.py missing"


def test_corpus_stays_small() -> None:
    assert len(CORPUS) < 300
    assert sum(path.stat().st_size for path in CORPUS) < 1_000_000
