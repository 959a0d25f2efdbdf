"""Saving figures: PNG (and SVG where asked) through temporary files and renames, so a folder
never holds a half-written image. The Agg backend is used: no display is needed.

The report embeds the PNGs; ``WIDTHLAB_FIGURE_FORMATS=png,svg`` also writes every figure as an
SVG beside it (vector figures for a paper; it adds about a fifth to a report's drawing time).

The studies draw their figures (``widthlab/studies/<name>/figures.py``); the report builder
saves them with :func:`save`.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from widthlab._io import atomic_path  # noqa: E402
from widthlab.errors import UsageError  # noqa: E402

FORMATS = ("png", "svg")  # the formats :func:`save` can write
DPI = 110


def formats() -> tuple[str, ...]:
    """The formats a figure is saved in: ``WIDTHLAB_FIGURE_FORMATS`` (comma-separated, from
    :data:`FORMATS`; PNG always, the report embeds it), default PNG only."""
    env = os.environ.get("WIDTHLAB_FIGURE_FORMATS", "png")
    asked = [f.strip().lower() for f in env.split(",") if f.strip()]
    bad = sorted(set(asked) - set(FORMATS))
    if bad:
        raise UsageError(f"WIDTHLAB_FIGURE_FORMATS names unknown formats {bad}; use a comma "
                         f"list of {', '.join(FORMATS)} (e.g. png,svg)")
    return tuple(f for f in FORMATS if f == "png" or f in asked)


def tight_bbox(fig: Figure) -> Bbox:
    """The figure's tight bounding box in inches, padded as ``savefig(bbox_inches="tight")``
    pads it, from one layout pass at :data:`DPI` (``"tight"`` lays the figure out again for
    every format saved: about a third of the report's time)."""
    fig.set_dpi(DPI)
    fig.draw_without_rendering()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    return box.padded(matplotlib.rcParams["savefig.pad_inches"])


def save(fig: Figure, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.png`` (and ``.svg``, see :func:`formats`) atomically;
    close it. Returns the paths written, the PNG first."""
    kinds = formats()  # checked before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        bbox = tight_bbox(fig)
        for fmt in kinds:
            path = out / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches=bbox)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
