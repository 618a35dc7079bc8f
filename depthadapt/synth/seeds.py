"""Per-sample generator seeds: every random draw of the synthetic domains starts from one of these."""

from __future__ import annotations

import hashlib

__all__ = ["sample_seed"]


def sample_seed(family: str, style: str, seed: int, index: int) -> int:
    """A 63-bit generator seed from a hash of (family, style, seed, index), the same on every machine."""
    digest = hashlib.sha256(f"{family}/{style}/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
