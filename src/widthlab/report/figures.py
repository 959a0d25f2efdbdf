"""Saving figures: PNG and SVG through temporary files and renames, so a folder never holds a
half-written image. The Agg backend is used: no display is needed.

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

from widthlab._io import atomic_path  # noqa: E402

FORMATS = ("png", "svg")
DPI = 110


def save(fig: Figure, out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Write ``fig`` as ``out_dir/name.png`` and ``.svg`` (atomically); close it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for fmt in FORMATS:
            path = out / f"{name}.{fmt}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight")
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
