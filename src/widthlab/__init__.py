"""widthlab: how many neurons does this layer need?

Width sweeps of one-hidden-layer MLPs on MNIST and FashionMNIST, per-neuron activation
statistics, layers that learn their width, neuron importance, and a report that recomputes the
claims of the 2017 research journal this toolkit grew from.

Start with the CLI (``widthlab --help``) or the Python API::

    from widthlab.data import load_splits
"""

__version__ = "0.1.0"
