"""Layers and models: the MLP bank, modifiers that let a layer learn its width, width lists.

Public API::

    from widthlab.nn import MLP, MLPBank, ModelSpec, Modifier, NeuronGate, parse_widths
"""

from widthlab.nn.bank import MLP, MLPBank, ModelSpec, init_mlp
from widthlab.nn.modifiers import Modifier, NeuronGate
from widthlab.nn.widths import parse_widths, sqrt2_widths

__all__ = ["MLP", "MLPBank", "ModelSpec", "Modifier", "NeuronGate", "init_mlp", "parse_widths",
           "sqrt2_widths"]
