"""Random query ids and socket choices from the kernel's CSPRNG, read a block at a time.

`secrets.randbits(16)` makes one getrandom(2) call per id, and `secrets.randbelow` one or more;
a forwarded query needs both, three calls in all. Bytes read in blocks are as unpredictable as
bytes read one call each, so the pool draws from a block of BLOCK bytes and reads the next one
when it is used up: a thousandth of the system calls for the same ids.
"""

from __future__ import annotations

import os

BLOCK = 2048  # bytes: 1,024 16-bit values per getrandom(2)


class Entropy:
    """Uniform random 16-bit values from os.urandom, buffered."""

    def __init__(self, block: int = BLOCK) -> None:
        self._block = block
        self._bytes = b""
        self._at = 0

    def u16(self) -> int:
        at = self._at
        if at + 2 > len(self._bytes):
            self._bytes = os.urandom(self._block)
            at = 0
        self._at = at + 2
        return self._bytes[at] << 8 | self._bytes[at + 1]

    def below(self, n: int) -> int:
        """Uniform in [0, n) for 1 <= n <= 65536 (values that would skew the modulo are
        drawn again)."""
        if not 1 <= n <= 0x10000:
            raise ValueError(f"below({n}): n must be in 1..65536")
        if n == 1:
            return 0  # one choice: nothing to draw
        limit = 0x10000 - 0x10000 % n
        while True:
            value = self.u16()
            if value < limit:
                return value % n
