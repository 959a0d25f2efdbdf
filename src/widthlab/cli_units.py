"""``widthlab units FILE.py:factory``: list the groups of coupled units of a user's model.

The factory is a function in the user's own Python file (it is run: this is the user's code)
that returns ``(model, example_inputs)`` (a tuple of inputs, or one tensor) or a model alone,
in which case ``--shape`` gives the shape of one random float input. Example::

    widthlab units my_resnet.py:build --shape 1,3,64,64
    widthlab units gpt.py:make          # make() returns (model, (tokens,))
"""

from __future__ import annotations

import runpy
import time
from pathlib import Path

import click

from widthlab.errors import UsageError


def _factory(spec: str):
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise click.BadParameter(f"expected FILE.py:factory, got {spec!r}", param_hint="MODEL")
    if not Path(path).is_file():
        raise click.BadParameter(f"no file {path!r}", param_hint="MODEL")
    namespace = runpy.run_path(path, run_name="widthlab_units_model")
    fn = namespace.get(name)
    if not callable(fn):
        raise click.BadParameter(f"{path} defines no function {name!r}", param_hint="MODEL")
    return fn


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise click.BadParameter(f"expected sizes like 1,3,64,64, got {text!r}",
                                 param_hint="--shape")
    return shape


@click.command("units")
@click.argument("model")
@click.option("--shape", default=None,
              help="Shape of one random float input, for a factory returning a model alone "
                   "(e.g. 1,3,64,64).")
def units_cmd(model: str, shape: str | None) -> None:
    """List what can be sized in MODEL (FILE.py:factory): one line per group of coupled
    units (a layer's features, a residual stream, attention heads) with its kind, number of
    units and parameters."""
    import torch

    from widthlab.units import build_graph

    made = _factory(model)()
    size = _shape(shape)
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        net, inputs = made
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    elif isinstance(made, torch.nn.Module):
        if size is None:
            raise UsageError(f"{model} returned a model without example inputs; give --shape "
                             "1,3,64,64 or return (model, inputs)")
        net, inputs = made, (torch.randn(size),)
    else:
        raise UsageError(f"{model} returned a {type(made).__name__}; return a model or "
                         "(model, example_inputs)")
    start = time.perf_counter()
    graph = build_graph(net, *inputs)
    table = graph.describe()
    click.echo(table.to_string(index=False))
    click.echo(f"{len(table)} groups, {int(table['size'].sum())} units, traced in "
               f"{time.perf_counter() - start:.2f} s")
