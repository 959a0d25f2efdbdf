"""Large CPU buffers backed by transparent huge pages where the kernel offers them.

The greedy elimination reads the stale part of a row of its ``(H+1)^2`` matrix from a column:
one value per row, 8 ``H`` bytes apart, so every value is on its own 4 KiB page and costs a
TLB miss; with 2 MiB pages (Linux ``madvise(MADV_HUGEPAGE)``, honoured when
``/sys/kernel/mm/transparent_hugepage/enabled`` is ``always`` or ``madvise``) those reads and
the column moves of its compactions take far fewer TLB misses. The
advice is given before the first write, so the pages are huge from the start; where it is not
available (another OS, THP ``never``) the buffer is an ordinary one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch
from torch import Tensor

__all__ = ["big_empty"]

_MADV_HUGEPAGE = 14
_HUGE = 1 << 21
_libc = None


def _madvise_huge(t: Tensor) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    a = t.data_ptr()
    lo = (a + _HUGE - 1) & ~(_HUGE - 1)  # the whole 2 MiB pages inside the buffer
    hi = (a + t.numel() * t.element_size()) & ~(_HUGE - 1)
    if hi <= lo:
        return False
    return _libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_HUGEPAGE) == 0


def big_empty(*shape: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """``torch.empty(shape)``; on a Linux CPU and over 8 MiB, advised onto huge pages before
    its first write (an ordinary buffer wherever the advice is unavailable)."""
    t = torch.empty(*shape, dtype=dtype, device=device)
    if (t.device.type == "cpu" and sys.platform.startswith("linux")
            and t.numel() * t.element_size() >= 4 * _HUGE):
        try:
            _madvise_huge(t)
        except (OSError, AttributeError):  # no libc or no madvise: an ordinary buffer
            pass
    return t
