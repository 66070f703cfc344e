"""The pool's random ids and socket choices (R11): uniform, in range, from the kernel's CSPRNG."""

from __future__ import annotations

import collections

import pytest

from resolver.forward import entropy as entropy_module
from resolver.forward.entropy import Entropy


def test_r11_values_cover_16_bits_and_read_the_kernel_once_per_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []
    real = entropy_module.os.urandom

    def counted(size: int) -> bytes:
        reads.append(size)
        return real(size)

    monkeypatch.setattr(entropy_module.os, "urandom", counted)
    source = Entropy(block=64)  # 32 values a read
    values = [source.u16() for _ in range(32 * 10)]
    assert reads == [64] * 10
    assert all(0 <= v <= 0xFFFF for v in values)
    assert len(set(values)) > 300  # 320 draws from 65,536: repeats are rare, never most
    assert max(values) > 0x8000 > min(values)  # both halves: the high byte is used


def test_r11_below_is_in_range_and_uniform() -> None:
    source = Entropy()
    counts = collections.Counter(source.below(16) for _ in range(16_000))
    assert set(counts) == set(range(16))
    # 1,000 expected each; a six-sigma band (sigma ~31) that a skewed draw would leave.
    assert all(800 < c < 1200 for c in counts.values()), counts
    assert source.below(1) == 0
    assert {source.below(65536) for _ in range(100)} <= set(range(65536))


def test_below_refuses_a_range_it_cannot_draw_from() -> None:
    source = Entropy()
    for n in (0, -1, 65537):
        with pytest.raises(ValueError, match=f"below\\({n}\\)"):
            source.below(n)
