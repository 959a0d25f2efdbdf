"""Units: the groups of coupled widths of any model, and their removal.

``build_graph`` traces one forward and finds every group of coupled units (a layer's
features, a residual stream, attention heads, conv groups); ``remove_units`` removes units of a
group from every parameter, gradient, buffer, module size attribute, Hugging Face config
field and optimizer state, in place.

Public API::

    from widthlab.units import build_graph, remove_units, UnitGraph, Group
    graph = build_graph(model, example_input)
    graph.describe()                                   # one row per group
    list_units(model, example_input)                   # the same table in one call
    remove_units(model, graph, graph["layer1.0.conv1:out"], [0, 3], optimizer=opt)
    resize_to_state_(fresh_model, shrunk_state_dict, sizes)   # resume a shrunk checkpoint
"""

from widthlab.units.graph import Group, Slice, UnitGraph, build_graph, list_units
from widthlab.units.remove import remove_units
from widthlab.units.resize import resize_to_state_, size_attrs
from widthlab.units.snapshot import all_or_nothing
from widthlab.units.trace import UnitTraceError

__all__ = ["Group", "Slice", "UnitGraph", "UnitTraceError", "all_or_nothing", "build_graph",
           "list_units", "remove_units", "resize_to_state_", "size_attrs"]
