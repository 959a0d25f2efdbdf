"""widthlab: how many neurons does this layer need?

Width sweeps of one-hidden-layer MLPs on MNIST and FashionMNIST, per-neuron activation
statistics, layers that learn their width, neuron importance, and a report that recomputes the
claims of the 2017 research journal this toolkit grew from.

Start with the CLI (``widthlab --help``) or the Python API::

    from widthlab.data import load_splits
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["width_frontier"]


def __getattr__(name: str):
    """Lazy exports: ``widthlab.width_frontier`` imports torch only when first used."""
    if name == "width_frontier":
        import importlib  # a dynamic import: the root package depends on no layer

        width_frontier = importlib.import_module("widthlab.frontier").width_frontier

        return width_frontier
    raise AttributeError(f"module 'widthlab' has no attribute {name!r}")
