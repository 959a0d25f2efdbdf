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

Groups of units read through blocks of columns (Conv2d channels in im2col form, attention
heads, FFN neurons; several consumers): :func:`group_frontier` (structured OBS and the usual
rankings), :func:`allocate` (widths of several groups under one budget). On a model and a
group of :mod:`widthlab.units`: :func:`model_frontier` (the model's own loss at every width),
:func:`apply_cut`, :func:`cut_groups`; the widths of a whole network under one loss,
parameter or multiply-add budget: :func:`cut_network`.

For a trained :class:`~widthlab.nn.bank.MLPBank`: :func:`frontier_of_bank`,
:func:`bank_sequential`.
"""

from widthlab.frontier.api import frontier_ks, frontiers, width_frontier
from widthlab.frontier.bank import bank_sequential, frontier_of_bank, sequential_layer
from widthlab.frontier.block_obs import BlockProblem, eliminate_blocks
from widthlab.frontier.blocks import (
    BlockConsumer,
    RowStats,
    conv_consumers,
    heads_consumer,
    linear_consumer,
    row_stats,
)
from widthlab.frontier.budget import Allocation, allocate, loss_scale
from widthlab.frontier.cut import LayerCut, cut_layers
from widthlab.frontier.group import GROUP_METHODS, GroupCut, GroupFrontier, group_frontier
from widthlab.frontier.methods import METHODS
from widthlab.frontier.models import (
    ModelFrontier,
    apply_cut,
    cut_groups,
    group_frontier_of,
    model_frontier,
    model_loss,
)
from widthlab.frontier.network import (
    NetworkCut,
    cut_network,
    network_groups,
    plain_costs,
    unit_costs,
)
from widthlab.frontier.path import LayerPath, trace_layer
from widthlab.frontier.result import Frontier

__all__ = ["Allocation", "BlockConsumer", "BlockProblem", "Frontier", "GROUP_METHODS", "GroupCut",
           "GroupFrontier", "LayerCut", "LayerPath", "METHODS", "ModelFrontier", "NetworkCut",
           "RowStats", "allocate", "apply_cut", "bank_sequential", "conv_consumers", "cut_groups",
           "cut_layers", "cut_network", "eliminate_blocks", "frontier_ks", "frontier_of_bank",
           "frontiers", "group_frontier", "group_frontier_of", "heads_consumer", "linear_consumer",
           "loss_scale", "model_frontier", "model_loss", "network_groups", "plain_costs",
           "row_stats", "sequential_layer", "trace_layer", "unit_costs", "width_frontier"]
