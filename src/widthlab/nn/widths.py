"""Width lists as the journal wrote them: ``int(2**(i/2))``, i.e. steps of sqrt(2)."""

from __future__ import annotations

import math

from widthlab.errors import UsageError


def sqrt2_widths(lo: int, hi: int) -> list[int]:
    """All ``int(2**(i/2))`` in ``[lo, hi]`` (``sqrt2_widths(16, 1448)`` is the journal's
    i = 8..21)."""
    if lo < 1 or hi < lo:
        raise UsageError(f"width range needs 1 <= lo <= hi, got {lo}:{hi}")
    out = []
    i = max(0, int(2 * math.log2(lo)) - 1)
    while (w := int(2 ** (i / 2))) <= hi:
        if w >= lo and (not out or w != out[-1]):
            out.append(w)
        i += 1
    return out


def parse_widths(text: str) -> list[int]:
    """Parse ``"16:1448"`` (sqrt(2) steps, both ends included when on the grid) or
    ``"16,32,100"`` (an explicit list)."""
    text = text.strip()
    try:
        if ":" in text:
            lo, hi = (int(t) for t in text.split(":"))
            widths = sqrt2_widths(lo, hi)
        else:
            widths = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"cannot read widths {text!r}: give LO:HI (sqrt(2) steps, e.g. "
                         "16:1448) or a comma list (e.g. 16,64,256)") from None
    if not widths or any(w < 1 for w in widths):
        raise UsageError(f"widths must be positive integers, got {text!r}; give e.g. "
                         "--widths 16,64,256 or --widths 16:1448")
    return widths
