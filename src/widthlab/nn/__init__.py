"""Layers and models: the MLP bank, layers that learn their width, width lists.

One file per layer family:

- ``bank.py``: :class:`MLPBank` (many MLPs trained at once), :class:`ModelSpec`, :class:`MLP`;
- ``modifiers.py``: the :class:`Modifier` interface that plugs width-learning layers into a bank;
- ``flexible.py``: the sigmoid cut-off layer that learns its width (:class:`FlexibleLinear`,
  :class:`FlexibleMLP`, bank modifier :class:`FlexibleCutoff`, the closed-form penalty
  :func:`cutoff_integral`);
- ``gated.py``: the sparsifier, per-neuron gates under an L1 penalty that remove dead neurons
  (:class:`GatedLinear`, :class:`GatedMLP`, bank modifier :class:`SparsifierGate`);
- ``widths.py``: the journal's sqrt(2) width grid.

Public API::

    from widthlab.nn import MLP, MLPBank, ModelSpec, Modifier, NeuronGate, parse_widths
    from widthlab.nn import FlexibleLinear, FlexibleMLP, FlexibleCutoff, cutoff_integral
    from widthlab.nn import GatedLinear, GatedMLP, SparsifierGate
"""

from widthlab.nn.bank import MLP, MLPBank, ModelSpec, init_mlp
from widthlab.nn.flexible import FlexibleCutoff, FlexibleLinear, FlexibleMLP, cutoff_integral
from widthlab.nn.gated import GatedLinear, GatedMLP, SparsifierGate
from widthlab.nn.modifiers import Modifier, NeuronGate
from widthlab.nn.widths import parse_widths, sqrt2_widths

__all__ = ["MLP", "FlexibleCutoff", "FlexibleLinear", "FlexibleMLP", "GatedLinear", "GatedMLP",
           "MLPBank", "ModelSpec", "Modifier", "NeuronGate", "SparsifierGate", "cutoff_integral",
           "init_mlp", "parse_widths", "sqrt2_widths"]
# learned widths of a user's own model (``surgery/``): gates on its Linear / Conv2d layers,
# dead units removed with their optimizer state
from widthlab.nn.surgery import (  # noqa: E402
    SignFlipRule,
    UnitGate,
    gate_layers,
    gate_widths,
    shrink_,
    size_penalty,
)

__all__ += ["SignFlipRule", "UnitGate", "gate_layers", "gate_widths", "shrink_", "size_penalty"]
