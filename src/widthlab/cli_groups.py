"""``widthlab frontier`` for groups of units: the widths of a whole network under one budget.

    widthlab frontier --model net.py:build --state net.pt --calib calib.pt --eval eval.pt \\
        --target params --amount 0.5 -o cut
    widthlab frontier --model net.pt2 --calib calib.pt --eval eval.pt --fraction 0.5 \\
        --groups blocks.0.mlp.fc:out --method wanda_sp

The model is a factory in the user's own Python file (``FILE.py:factory`` returning a model or
``(model, example_inputs)``; this is the user's code and it is run) with its weights from
``--state`` (``torch.load(weights_only=True)``), or a ``torch.export`` file (``.pt2``, its
``linear``/``conv2d`` calls turned back into ``nn.Linear``/``nn.Conv2d`` modules). Calibration
and evaluation data are separate files of ``(inputs, targets)`` (a ``.pt`` tuple/dict read with
``weights_only=True``, or an ``.npz`` with ``x`` and ``y``); the same data for both is refused
unless ``--same-data`` (FLAP issue #13: calibrating on the evaluation set).

``--target loss|accuracy|params|macs --amount A`` allocates every selected group's width by the
cheapest next removal (:func:`widthlab.frontier.cut_network`, compensated OBS costs);
``accuracy``: the largest loss budget whose cut keeps the calibration accuracy within ``A`` of
the uncut model's. ``--fraction F`` instead cuts every selected group to ``F`` of its units by
``--method``. Writes ``widths.csv``/``widths.json`` (one row per group), ``model.pt`` (the cut
state dict, written atomically) and ``curve.csv``.
"""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import click

from widthlab.errors import UsageError

__all__ = ["load_data", "load_group_model", "run_groups"]


def _factory_model(spec: str, state: Path | None):
    import torch

    from widthlab.cli_frontier import _read
    from widthlab.cli_units import _factory

    if state is None:
        raise UsageError(f"{spec} builds a model without weights; give them with --state "
                         "model.pt (torch.save(model.state_dict(), 'model.pt'))")
    made = _factory(spec)()
    net = made[0] if isinstance(made, tuple) and made else made
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"{spec} returned a {type(net).__name__}; return a model or "
                         "(model, example_inputs)")
    sd = _read(state, False)
    if not isinstance(sd, dict):
        raise UsageError(f"{state} holds a {type(sd).__name__}; expected a state dict")
    try:
        net.load_state_dict(sd)
    except RuntimeError as exc:
        why = " ".join(str(exc).split())[:300]
        raise UsageError(f"the state dict in {state} does not fit {spec}: {why}") from None
    return net.eval()


def _linear_modules(gm):
    """``aten.linear`` / ``aten.conv2d`` calls of an exported module become calls of
    ``nn.Linear`` / ``nn.Conv2d`` modules holding the same parameters (so hooks and the
    units core's removal see layers)."""
    import torch
    from torch import nn

    ops = {torch.ops.aten.linear.default: "linear", torch.ops.aten.conv2d.default: "conv2d"}
    for node in list(gm.graph.nodes):
        kind = ops.get(node.target) if node.op == "call_function" else None
        if kind is None or node.args[1].op != "get_attr":
            continue
        wname = node.args[1].target
        owner = wname.rpartition(".")[0]
        if not owner or not wname.endswith("weight"):
            continue
        w = gm.get_parameter(wname)
        b = node.args[2] if len(node.args) > 2 else None
        if kind == "linear":
            mod = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        else:
            extra = list(node.args[3:]) + [None] * 4
            stride, padding, dilation, groups = (extra[i] or d for i, d in
                                                 enumerate((1, 0, 1, 1)))
            mod = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride,
                            padding, dilation, groups, bias=b is not None)
        mod.weight = w
        if b is not None:
            mod.bias = gm.get_parameter(b.target)
        holder = gm.get_submodule(owner)
        own = {n for n, _ in holder.named_parameters(recurse=False)}
        wanted = {"weight", "bias"} if b is not None else {"weight"}
        if own == wanted and not any(True for _ in holder.children()):
            name = owner  # the layer takes the holder's place: same state dict keys
        else:
            name = owner + ".layer"
            for p in ("weight", "bias"):
                holder._parameters.pop(p, None)
        gm.add_submodule(name, mod)
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    # an exported program is inference-only and refuses train()/eval(): they change nothing
    gm.train = types.MethodType(_same_mode, gm)
    gm.eval = types.MethodType(_same_mode, gm)
    return gm


def _same_mode(self, mode: bool = True):
    return self


def load_group_model(spec: str, state: Path | None):
    """The model of ``--model``: ``FILE.py:factory`` with ``--state``, or a ``.pt2``
    ``torch.export`` file; a TorchScript file is refused (hooks cannot run on it)."""
    import torch

    path = Path(spec)
    if path.suffix == ".pt2":
        if not path.is_file():
            raise UsageError(f"no file {spec!r}")
        try:
            gm = torch.export.load(path).module()
        except Exception as exc:  # noqa: BLE001 - a damaged archive raises anything
            raise UsageError(f"cannot load {spec} as a torch.export file ({type(exc).__name__}:"
                             f" {' '.join(str(exc).split())[:160]})") from None
        return _linear_modules(gm)
    if ":" in spec and not path.is_file():
        return _factory_model(spec, state)
    if path.is_file():
        raise UsageError(f"{spec}: for groups give FILE.py:factory with --state, or a "
                         "torch.export file (.pt2, torch.export.save); a TorchScript module "
                         "cannot be traced with hooks, a pickled module is not read")
    raise UsageError(f"no file {spec!r}; give FILE.py:factory --state model.pt or a .pt2 file")


def load_data(path: Path, what: str):
    """``(inputs, targets)`` from a ``.pt`` (tuple or dict with ``x``/``y``, weights only) or
    an ``.npz`` (``x``, ``y``)."""
    import numpy as np
    import torch

    from widthlab.cli_frontier import _read

    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                obj = {k: torch.from_numpy(z[k]) for k in ("x", "y") if k in z}
        except Exception as exc:  # noqa: BLE001 - a damaged zip raises anything
            raise UsageError(f"{what}: cannot read {path} ({type(exc).__name__})") from None
    else:
        obj = _read(path, False)
    if isinstance(obj, dict):
        obj = (obj.get("x"), obj.get("y"))
    if not (isinstance(obj, tuple | list) and len(obj) == 2
            and all(isinstance(t, torch.Tensor) for t in obj)):
        raise UsageError(f"{what}: {path} must hold (inputs, targets) tensors: a tuple or a "
                         "dict with 'x' and 'y' (.pt), or arrays x and y (.npz)")
    x, y = obj
    if len(x) != len(y) or len(x) == 0:
        raise UsageError(f"{what}: {path} holds {len(x)} inputs and {len(y)} targets; give "
                         "one target per input, at least one")
    if not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
        y = y.long()  # uint8/int32 class labels (MNIST's) for the cross-entropy
    return x, y


def _same(c, e) -> bool:
    import torch

    return all(a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
               for a, b in zip(c, e, strict=True))


def _probe(model, x, spec: str) -> None:
    """One forward on three calibration samples, its failure in one line."""
    import torch

    try:
        with torch.no_grad():
            model(x[:3])
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
        why = " ".join(str(exc).split())[:200]
        hint = ("; export it with a dynamic batch dimension (torch.export.export(model, "
                "(x,), dynamic_shapes=({0: torch.export.Dim('batch')},)))"
                if "Guard failed" in why else "; give --calib inputs the model was trained on")
        raise UsageError(f"{spec} cannot run on --calib inputs of shape {tuple(x.shape)} "
                         f"({type(exc).__name__}: {why}){hint}") from None


def _accuracy_cut(model, graph, calib, amount, groups, batch):
    """The largest loss budget (a geometric grid up to the dense calibration loss) whose cut
    keeps the calibration accuracy within ``amount`` of the uncut model's."""
    from widthlab.frontier import cut_network, model_loss

    dense_loss, dense_acc = model_loss(model, calib, batch=batch)
    best = None
    for f in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0):
        m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
        res = cut_network(m2, g2, calib, target="loss", amount=f * dense_loss,
                          groups=groups, batch=batch)
        if model_loss(m2, calib, batch=batch)[1] < dense_acc - amount - 1e-12:
            break
        best = (m2, g2, res)
    if best is None:
        raise UsageError(f"no cut keeps the calibration accuracy within {amount} of "
                         f"{dense_acc:.4f}; allow a larger --amount")
    return best


def _rows(graph_before, graph_after, names):
    rows = []
    for n in names:
        g0 = graph_before[n]
        w = graph_after[n].size
        rows.append({"group": n, "kind": g0.kind, "width": g0.size, "kept": w,
                     "removed": g0.size - w})
    return rows


def _write(out: Path, rows, curve, model) -> list[Path]:
    import pandas as pd
    import torch

    from widthlab._io import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=["group", "kind", "width", "kept", "removed"])
    paths = [out / "widths.csv", out / "widths.json", out / "curve.csv", out / "model.pt"]
    with atomic_path(paths[0]) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(paths[1]) as tmp:
        tmp.write_text(json.dumps(rows, indent=1))
    with atomic_path(paths[2]) as tmp:
        curve.to_csv(tmp, index=False)
    with atomic_path(paths[3]) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    return paths


def run_groups(spec: str, state: Path | None, calib_path: Path, eval_path: Path,
               same_data: bool, groups: str | None, method: str, target: str | None,
               amount: float | None, fraction: float | None, batch: int, out: Path,
               device: str = "cpu") -> None:
    """The group mode of ``widthlab frontier`` (see the module docstring); ``device``: cpu,
    cuda or auto (the model and both data sets are moved there; model.pt is saved from the
    CPU)."""
    import pandas as pd

    from widthlab.frontier import GROUP_METHODS, cut_groups, cut_network, model_loss
    from widthlab.frontier.models import find_group
    from widthlab.frontier.network import network_groups
    from widthlab.units import build_graph

    if (target is None) == (fraction is None):
        raise UsageError("give either --target (with --amount) or --fraction")
    if fraction is not None and amount is not None:
        raise UsageError("--amount goes with --target; --fraction cuts every group to that "
                         "fraction by itself: give one of the two forms")
    if target is not None and amount is None:
        raise UsageError(f"--target {target} needs --amount (a loss increase, an accuracy "
                         "drop, or the fraction of parameters/multiply-adds to remove)")
    if method not in GROUP_METHODS:
        raise UsageError(f"unknown --method {method!r}; choose one of {', '.join(GROUP_METHODS)}")
    if target is not None and method != "obs":
        raise UsageError("--target allocates by the compensated (obs) costs; use --fraction "
                         f"to cut by --method {method}")
    calib, ev = load_data(calib_path, "--calib"), load_data(eval_path, "--eval")
    if not same_data and (calib_path.resolve() == eval_path.resolve() or _same(calib, ev)):
        raise UsageError("--calib and --eval are the same data: a cut calibrated on its "
                         "evaluation set overstates every method (FLAP issue #13); give "
                         "held-out evaluation data, or --same-data to do it knowingly")
    from widthlab.engine import resolve_device

    dev = resolve_device(device)
    calib, ev = tuple(t.to(dev) for t in calib), tuple(t.to(dev) for t in ev)
    model = load_group_model(spec, state).to(dev)
    _probe(model, calib[0], spec)
    graph = build_graph(model, calib[0][:2])
    if groups:
        chosen = [find_group(graph, g.strip()).name for g in groups.split(",") if g.strip()]
    else:
        chosen = [g.name for g in network_groups(model, graph)]
    if not chosen:
        raise UsageError("no group to cut: list them with `widthlab units` and pass --groups")
    before = copy.deepcopy(graph)
    dense = model_loss(model, ev, batch=batch)
    if target == "accuracy":
        model, graph, res = _accuracy_cut(model, graph, calib, amount, chosen, batch)
    elif target is not None:
        res = cut_network(model, graph, calib, target=target, amount=amount, groups=chosen,
                          batch=batch)
    if target is not None:
        curve = pd.DataFrame(res.allocation.curve, columns=["saving", "predicted_loss"])
        curve.insert(0, "group", [g for g, _ in res.allocation.removed][:len(curve)])
    else:
        frs = cut_groups(model, graph, {n: fraction for n in chosen}, calib, method,
                         batch=batch)
        curve = pd.DataFrame([{"group": f.group, "step": i, "unit": u, "cost": c}
                              for f in frs for i, (u, c) in
                              enumerate(zip(f.frontier.order, f.frontier.costs,
                                            strict=True))])
    cut = model_loss(model, ev, batch=batch)
    paths = _write(out, _rows(before, graph, chosen), curve, model)
    for r in _rows(before, graph, chosen):
        click.echo(f"{r['group']}: {r['width']} -> {r['kept']}")
    click.echo(f"eval loss {dense[0]:.4f} -> {cut[0]:.4f}, accuracy {100 * dense[1]:.2f}% -> "
               f"{100 * cut[1]:.2f}%")
    for p in paths:
        click.echo(str(p))
