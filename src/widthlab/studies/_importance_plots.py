"""Drawing helpers shared by the importance and ordering-stability studies' figures: one
colour per neuron ordering, the same in every figure of both studies.

Example::

    from widthlab.studies._importance_plots import color

    ax.plot(x, y, color=color("taylor"), label="taylor")
"""

from __future__ import annotations

#: One colour per ordering (exact importance, its magnitude, every proxy, random).
COLORS = {"exact": "k", "exact_abs": "0.35", "gate": "C9", "act_std": "C0", "in_norm": "C1",
          "out_norm": "C2", "taylor": "C3", "contribution": "C4", "taylor2": "C5",
          "random": "0.6"}


def color(name: str) -> str:
    """The colour of ordering ``name`` (grey-blue ``C7`` for an unknown one)."""
    return COLORS.get(name, "C7")


__all__ = ["COLORS", "color"]
