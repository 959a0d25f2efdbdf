"""Learn the width of every layer of a user's own network and shrink it during training.

- ``kinds.py``: the gate kinds, ``"l1"`` (``relu(g)`` under an L1 price) and
  ``"hard_concrete"`` (Louizos et al.'s stochastic L0 gate), :func:`get_gate_kind`;
- ``gates.py``: :func:`gate_layers` puts per-unit gates of a kind (price
  :meth:`UnitGate.penalty`) on named ``nn.Linear`` / ``nn.Conv2d`` layers of any model, in
  place, through forward hooks; :func:`size_penalty`, :func:`gate_widths`, :func:`model_gates`;
- ``layer_gates.py``: where a named layer's gate goes and which units-core group
  (:func:`widthlab.units.build_graph`, traced on ``example``) it removes, with clear errors
  where a gate of 0 is not a removal (a residual stream, a sigmoid, the model's output);
- ``rules.py``: when a unit goes: the journal's ``"dead"`` rule, Smallify's ``"smallify"``;
- ``shrink.py``: :func:`shrink_` removes dead units from layers, BatchNorms, consumers and the
  optimizer's state, in place;
- ``unit_gates.py``: ``gate_layers(model, groups=[...], example=x)`` gates the groups of
  :mod:`widthlab.units` (residual streams, attention heads, FFN, channels) at exact points;
  ``shrink_`` removes their dead units with :func:`widthlab.units.remove_units`;
- ``fold.py``: :func:`fold_gates_` multiplies the gates into the weights and removes them;

Example::

    from widthlab.nn.surgery import gate_layers, shrink_, size_penalty
    gate_layers(model, ["conv1", "conv2"], example=x[:2])   # channels
    gate_layers(model, ["fc1", "fc2"], inputs="only", example=x[:2])  # Linears' inputs
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in batches:
        loss = F.cross_entropy(model(x), y) + 1e-4 * size_penalty(model)
        opt.zero_grad(); loss.backward(); opt.step()
    shrink_(model, opt)                                     # {"conv1": 3, "conv2": 12, ...}
"""

from widthlab.nn.surgery.fold import fold_gates_
from widthlab.nn.surgery.gates import UnitGate, gate_layers, gate_widths, model_gates, size_penalty
from widthlab.nn.surgery.kinds import HardConcreteKind, L1Kind, get_gate_kind
from widthlab.nn.surgery.rules import DeadRule, SignFlipRule, get_rule
from widthlab.nn.surgery.shrink import shrink_

__all__ = ["DeadRule", "HardConcreteKind", "L1Kind", "SignFlipRule", "UnitGate", "fold_gates_",
           "gate_layers", "gate_widths", "get_gate_kind", "get_rule", "model_gates", "shrink_",
           "size_penalty"]
