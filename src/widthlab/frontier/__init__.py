"""How many neurons does this trained layer need? The exact width frontier of any layer.

:func:`width_frontier` removes the neurons of an ``nn.Linear`` one at a time and reports the
accuracy of the network at every kept width ``k``. Its default method, ``obs``, is greedy
optimal-brain-surgeon elimination: the layer that consumes the neurons is refitted by least
squares after every removal (float64, inverse downdates), so the cut network works without
fine-tuning. Ordering criteria (exact single-neuron importance, proxies, random) are other
methods on the same curve.

Example::

    from widthlab.frontier import width_frontier

    fr = width_frontier(model, "fc1", calib=(x_val, y_val), eval=(x_test, y_test))
    print(fr.table)                # k, loss, acc, calib_loss, calib_acc, cost
    k = fr.recommend(tol=0.005)
    small = fr.cut(k)              # fc1 has k outputs, fc2 k inputs, compensated

Pruning after training, layer by layer: :func:`cut_layers` (one tolerance for all layers).

For a trained :class:`~widthlab.nn.bank.MLPBank`: :func:`frontier_of_bank`,
:func:`bank_sequential`.
"""

from widthlab.frontier.api import frontier_ks, frontiers, width_frontier
from widthlab.frontier.bank import bank_sequential, frontier_of_bank, sequential_layer
from widthlab.frontier.cut import LayerCut, cut_layers
from widthlab.frontier.graph import LayerPath, trace_layer
from widthlab.frontier.methods import METHODS
from widthlab.frontier.result import Frontier

__all__ = ["METHODS", "Frontier", "LayerCut", "LayerPath", "bank_sequential", "cut_layers",
           "frontier_ks", "frontier_of_bank", "frontiers", "sequential_layer", "trace_layer",
           "width_frontier"]
