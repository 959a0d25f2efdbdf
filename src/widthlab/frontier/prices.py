"""Price the gates of a network by the multiply-adds (or parameters) their units carry.

A per-unit L1 / L0 price treats a channel of a 28x28 feature map like one of a 7x7 map,
though the first costs 16 times the multiply-adds. :func:`price_per_mac_` sets every
units-core gate's ``price_scale`` (see :func:`widthlab.nn.surgery.gate_layers` with
``groups=``) to the multiply-adds one unit of its group carries at the model's current widths
(first order: the Linear/Conv2d weights of its slices times their output positions, as
:func:`widthlab.frontier.network.unit_costs` counts them), divided by the model's multiply-adds
per sample (:func:`widthlab.metrics.cost.count_macs`), times ``scale``. Call it again after
every ``shrink_`` so the prices follow the widths.

Example::

    gate_layers(model, groups=[g.name for g in build_graph(model, x[:2]).groups],
                example=x[:2])
    price_per_mac_(model, x[:2], scale=100)      # gate price ~ % of the model's MACs per unit
    ...                                          # train: loss + price * size_penalty(model)
    shrink_(model, opt); price_per_mac_(model, x[:2], scale=100)
"""

from __future__ import annotations

from torch import nn

from widthlab.errors import UsageError
from widthlab.frontier.network import unit_costs
from widthlab.metrics.cost import count_macs
from widthlab.nn.surgery.unit_gates import unit_gates

__all__ = ["price_per_mac_"]


def price_per_mac_(model: nn.Module, example, *, scale: float = 1.0,
                   per: str = "macs") -> dict[str, float]:
    """Set each units-core gate's ``price_scale`` to ``scale`` times the multiply-adds
    (``per="macs"``; ``"params"``: parameters) one unit of its group carries, over the whole
    model's multiply-adds per sample (parameters); in place.

    Parameters
    ----------
    model : nn.Module
        Gated with ``gate_layers(model, groups=..., example=...)``.
    example : Tensor or tuple of Tensor
        A small input batch, or the forward's arguments (the first one's batch size
        divides the counts).
    scale : float
    per : {"macs", "params"}

    Returns
    -------
    dict
        Gate key (the group name unless the gate was given another key) -> the
        ``price_scale`` set.
    """
    gates = unit_gates(model)
    if not gates:
        raise UsageError("price_per_mac_ prices units-core gates: call gate_layers(model, "
                         "groups=..., example=...) first")
    if per not in ("macs", "params"):
        raise UsageError(f"per must be 'macs' or 'params', got {per!r}")
    if not scale >= 0:
        raise UsageError(f"scale must be >= 0, got {scale}")
    costs = unit_costs(model, [g.unit_group for g in gates], example)
    if per == "macs":
        total = count_macs(model, example)
    else:
        gate_params = {id(g.gate) for g in gates}
        total = sum(p.numel() for p in model.parameters() if id(p) not in gate_params)
    out = {}
    for g in gates:
        g.price_scale = out[g.key] = scale * costs[g.unit_group.name][per] / total
    return out
