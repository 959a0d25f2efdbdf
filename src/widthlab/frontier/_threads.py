"""CPU intra-op thread count for a block of code.

Chains of small kernels (the elimination's steps, the class reductions of a score) are latency
bound: one thread runs them as fast as a pool on an idle machine and far faster on a busy one,
where a pool's threads wait for each other; the GEMMs between them keep every thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["threads"]


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (the previous count restored after)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)
