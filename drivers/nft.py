"""nftables scripts run inside a network namespace (`nsenter --net=PATH nft -f -`).

Used for the port-53 redirect of the listeners and for service VIPs. One nft transaction per
call, so a script that deletes and re-creates its own table replaces it atomically.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from drivers.errors import NetdnsError, NotFound, Unsupported

NFT_TIMEOUT = 10.0


def run_nft(netns_path: str, script: str, *, purpose: str) -> None:
    """Apply `script` in the namespace at `netns_path`; `purpose` names what it is for in errors."""
    missing = [tool for tool in ("nsenter", "nft") if shutil.which(tool) is None]
    if missing:
        raise Unsupported(
            f"{' and '.join(missing)} not found: {purpose} needs nftables; install the "
            "`nftables` and `util-linux` packages"
        )
    if not os.path.exists(netns_path):
        raise NotFound(f"network namespace {netns_path} does not exist ({purpose})")
    result = subprocess.run(
        ["nsenter", f"--net={netns_path}", "nft", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=NFT_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        reason = result.stderr.strip() or f"exit status {result.returncode}"
        if "Operation not supported" in reason or "No such file or directory" in reason:
            raise Unsupported(
                f"nftables nat does not work in {netns_path} ({reason}); load the nf_tables "
                "and nft_nat kernel modules"
            )
        raise NetdnsError(f"nft failed in {netns_path} ({purpose}): {reason}")
