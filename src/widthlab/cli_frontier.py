"""``widthlab frontier``: how many neurons does this trained layer need (or each group)?

    widthlab frontier --model model.pt --trust-model --layer 0 --dataset mnist -o out
    widthlab frontier --model sd.pt --arch 784,1024,10 --layer layers.0 --method obs \\
        --method taylor --method random --dataset fashion-mnist

Loads a saved model (a state dict of a widthlab ``MLP`` / an ``nn.Sequential`` MLP together
with ``--arch``, or, with ``--trust-model`` only, a whole pickled ``nn.Module``), computes
the width frontier of ``--layer`` by every ``--method`` (calibration: the validation split,
evaluation: the test split), prints the recommended width, and writes ``frontier.csv``
(every method's table) and ``frontier.png`` (accuracy versus kept width, one line per
method, the recommendation marked) into ``-o``.

Given a ``FILE.py:factory`` (with ``--state``) or a ``torch.export`` ``.pt2`` file and
``--calib``/``--eval`` data, it sizes groups of units instead (:mod:`widthlab.cli_groups`)::

    widthlab frontier --model net.py:build --state net.pt --calib c.pt --eval e.pt \\
        --target params --amount 0.5 -o cut
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from widthlab.cli_options import data_option, user_data
from widthlab.errors import UsageError

if TYPE_CHECKING:  # torch is imported when the command runs, not when the CLI starts
    from torch import nn

__all__ = ["frontier_cmd", "load_model"]


def _sequential(sizes: list[int]) -> nn.Sequential:
    from torch import nn

    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*mods)


TRUST_HELP = ("Also load a whole pickled nn.Module (torch.save(model)). Unpickling runs "
              "code stored in the file: pass it only for files you made or trust. Without "
              "it only tensors and state dicts are read (torch.load(weights_only=True)).")


def _read(path: Path, trust: bool):
    """``torch.load`` of ``path`` on the CPU: weights only unless ``trust``; refused files and
    unreadable ones raise a one-line :class:`UsageError`."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # "pickle protocol 4 ..." from the weights-only reader
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise UsageError(f"cannot load {path}: not a torch.save file ({_line(exc)}); save "
                             "the model with torch.save(model.state_dict(), path)") from None
        if not trust:
            raise UsageError(f"{path} holds pickled Python objects (a whole module?), which "
                             "can run code when loaded; if you trust the file pass "
                             "--trust-model (API: trust=True), else save "
                             "model.state_dict() and pass --arch") from None
    except Exception as exc:  # noqa: BLE001 - nothing of the file ran: a weights-only read
        raise UsageError(f"cannot load {path}: not a torch.save file ({_line(exc)}); save the "
                         "model with torch.save(model.state_dict(), path)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a trusted pickle may raise anything
        raise UsageError(f"cannot load {path} (--trust-model): {_line(exc)}; save with "
                         "torch.save(model, path)") from None


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_model(path: Path, arch: str | None = None, *, trust: bool = False) -> nn.Module:
    """A saved model: a state dict of ``widthlab.nn.MLP(arch)`` (keys ``layers.i.*``) or of
    ``nn.Sequential(Linear, ReLU, ..., Linear)`` (keys ``0.weight``...) with ``arch`` the layer
    sizes, e.g. ``"784,1024,10"``; or, only with ``trust=True``, a whole pickled module.

    Parameters
    ----------
    path : Path
        A ``torch.save`` file.
    arch : str, optional
        Layer sizes of a state dict.
    trust : bool
        Unpickle arbitrary objects (a whole ``nn.Module``). Unpickling runs code named in
        the file, so only for files you trust; by default the file is read with
        ``torch.load(weights_only=True)``, which runs nothing.

    Raises
    ------
    UsageError
        One line: unreadable file, a pickled object without ``trust``, a state dict without
        or not matching ``arch`` (with every missing and unexpected key).
    """
    from torch import nn

    from widthlab.nn.bank import MLP

    obj = _read(path, trust)
    if isinstance(obj, nn.Module):
        return obj.eval()
    if not isinstance(obj, dict):
        raise UsageError(f"{path} holds a {type(obj).__name__}; expected an nn.Module or a "
                         "state dict")
    if arch is None:
        raise UsageError(f"{path} holds a state dict; give its layer sizes with --arch "
                         "784,1024,10")
    try:
        sizes = [int(s) for s in arch.replace("-", ",").split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"cannot read --arch {arch!r}: give layer sizes like 784,1024,10") \
            from None
    model = MLP(sizes) if any(k.startswith("layers.") for k in obj) else _sequential(sizes)
    _load_state(model, obj, path, arch)
    return model.eval()


def _load_state(model: nn.Module, state: dict, path: Path, arch: str) -> None:
    """``model.load_state_dict(state)`` with every missing/unexpected key in one line."""
    want, have = model.state_dict(), state
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {tuple(getattr(have[k], 'shape', ()))} vs {tuple(want[k].shape)}"
              for k in want if k in have and getattr(have[k], "shape", None) != want[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing keys: {', '.join(missing)}" if missing else "",
                 f"unexpected keys: {', '.join(unexpected)}" if unexpected else "",
                 f"shapes (file vs --arch): {'; '.join(shapes)}" if shapes else ""]
        raise UsageError(f"the state dict in {path} does not fit --arch {arch}: "
                         f"{'; '.join(p for p in parts if p)}; give the layer sizes it was "
                         "saved with (the first weight's shape is (out, in))")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"the state dict in {path} does not fit --arch {arch}: "
                         f"{_line(exc)}") from None


def _figure(tables, rec: dict[str, int], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from widthlab._io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for method, t in tables.groupby("method", sort=False):
        line, = ax.plot(t.k, 100 * t.acc, marker=".", ms=3, lw=1.2, label=method)
        k = rec[method]
        ax.plot([k], [100 * float(t.loc[t.k == k, "acc"].iloc[0])], "o", ms=8, mfc="none",
                color=line.get_color())
    ax.axvline(rec[next(iter(rec))], color="0.5", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("kept neurons k")
    ax.set_ylabel("eval accuracy (%)")
    ax.set_title("width frontier (circles: recommended k)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "frontier.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def _splits(dataset: str, data_dir: Path | None, calib_size: int | None, user=None):
    from widthlab.data import load_splits

    d = user if user is not None else load_splits(dataset, data_dir=data_dir)
    va, te = d.split("val"), d.split("test")
    n = len(va) if calib_size is None else min(calib_size, len(va))
    return (va.x[:n], va.y[:n]), (te.x, te.y)


_GROUP_FLAGS = ("state", "calib_path", "eval_path", "groups", "fraction", "amount",
                "same_data")
_CHAIN_FLAGS = ("trust", "arch", "layer", "dataset", "data_dir", "data_path", "calib_size",
                "tol")


def _group_mode(model: str, params: dict) -> bool:
    """Groups when the model is FILE.py:factory or a .pt2 file, or a group option is given."""
    ctx = click.get_current_context()
    given = {k for k in params if ctx.get_parameter_source(k) is not None and
             ctx.get_parameter_source(k).name not in ("DEFAULT", "DEFAULT_MAP")}
    groups = (model.endswith(".pt2") or (":" in model and not Path(model).is_file())
              or bool(given & set(_GROUP_FLAGS)))
    wrong = sorted(given & set(_CHAIN_FLAGS if groups else _GROUP_FLAGS))
    if wrong:
        opts = ", ".join("--" + w.replace("_path", "").replace("_", "-") for w in wrong)
        mode = ("groups (FILE.py:factory, .pt2, --state/--calib/--eval/--groups)" if groups
                else "one layer (--layer)")
        raise UsageError(f"{opts} do(es) not apply to the {mode} form of widthlab frontier")
    return groups


@click.command("frontier", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_path", required=True,
              help="One layer: a torch.save'd model (a state dict with --arch, or a whole "
                   "module with --trust-model). Groups: FILE.py:factory (with --state) or a "
                   "torch.export .pt2 file.")
@click.option("--trust-model", "trust", is_flag=True, help=TRUST_HELP)
@click.option("--arch", default=None, help="Layer sizes of a state dict, e.g. 784,1024,10.")
@click.option("--layer", default=None, help="Module name of the nn.Linear to narrow.")
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default="mnist",
              show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Extra folder holding the IDX files of --dataset.")
@data_option
@click.option("--target", default=None,
              help="One layer: the label column of a CSV/TSV/Parquet --data file. Groups: "
                   "the budget, loss|accuracy|params|macs (with --amount).")
@click.option("--method", "methods", multiple=True, default=("obs", "taylor", "random"),
              show_default=True, help="Repeat for several methods; the first is recommended. "
                                      "Groups: one method (default obs).")
@click.option("--tol", type=click.FloatRange(min=0), default=0.005, show_default=True,
              help="Accuracy the recommended width may lose against the full layer.")
@click.option("--calib-size", type=click.IntRange(min=1), default=None,
              help="Validation images used for calibration (default: all 5000).")
@click.option("--state", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Groups: the state dict of FILE.py:factory's model "
                                 "(torch.load weights_only=True).")
@click.option("--calib", "calib_path", type=click.Path(exists=True, dir_okay=False,
                                                       path_type=Path), default=None,
              help="Groups: calibration (inputs, targets): .pt tuple/dict x, y or .npz x, y.")
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path), default=None,
              help="Groups: evaluation (inputs, targets), other data than --calib.")
@click.option("--same-data", is_flag=True,
              help="Groups: allow --eval to be the --calib data (overstates every method).")
@click.option("--groups", default=None,
              help="Groups: comma-separated names from `widthlab units` (default: every group "
                   "without a unit-mixing norm).")
@click.option("--amount", type=float, default=None,
              help="Groups: the --target's amount (loss increase, accuracy drop, or fraction "
                   "of parameters / multiply-adds to remove).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, help="Groups: cut every group to this fraction by --method.")
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True,
              help="Groups: samples per forward.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True)
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("frontier"), show_default=True, help="Folder for the outputs.")
def frontier_cmd(model_path: str, trust: bool, arch: str | None, layer: str | None,
                 dataset: str, data_dir: Path | None, data_path: Path | None,
                 target: str | None, methods: tuple[str, ...], tol: float,
                 calib_size: int | None, state: Path | None, calib_path: Path | None,
                 eval_path: Path | None, same_data: bool, groups: str | None,
                 amount: float | None, fraction: float | None, batch: int, device: str,
                 out: Path) -> None:
    """Accuracy versus kept width of one trained layer (--layer), or the widths of a whole
    network's groups under one budget (FILE.py:factory or .pt2 with --calib/--eval).

    One layer: prints the recommendation of the first method and every method's width within
    TOL, and writes OUT/frontier.csv and OUT/frontier.png. Groups: prints every group's width
    and the evaluation loss and accuracy before and after, and writes OUT/widths.csv,
    OUT/widths.json, OUT/curve.csv and OUT/model.pt (the cut state dict).
    """
    params = click.get_current_context().params
    if _group_mode(model_path, params):
        from widthlab.cli_groups import run_groups

        if calib_path is None or eval_path is None:
            raise UsageError("groups need --calib and --eval data files (inputs, targets)")
        if target is not None and target not in ("loss", "accuracy", "params", "macs"):
            raise UsageError(f"--target must be loss, accuracy, params or macs, got {target!r}")
        if len(methods) > 1 and click.get_current_context().get_parameter_source(
                "methods").name == "COMMANDLINE":
            raise UsageError("groups take one --method")
        method = methods[0] if click.get_current_context().get_parameter_source(
            "methods").name == "COMMANDLINE" else "obs"
        run_groups(model_path, state, calib_path, eval_path, same_data, groups, method,
                   target, amount, fraction, batch, out, device)
        return
    if layer is None:
        raise UsageError("give --layer (the nn.Linear to narrow), or a FILE.py:factory / .pt2 "
                         "model with --calib and --eval for groups")
    if not Path(model_path).is_file():
        raise UsageError(f"no file {model_path!r} (--model)")
    _layer(Path(model_path), trust, arch, layer, dataset, data_dir, data_path, target,
           methods, tol, calib_size, device, out)


def _layer(model_path: Path, trust: bool, arch: str | None, layer: str, dataset: str,
           data_dir: Path | None, data_path: Path | None, target: str | None,
           methods: tuple[str, ...], tol: float, calib_size: int | None, device: str,
           out: Path) -> None:
    """The one-layer form (see the module docstring)."""
    import pandas as pd

    from widthlab._io import atomic_path
    from widthlab.engine import resolve_device
    from widthlab.frontier import frontiers

    user = user_data(data_path, target)  # a user's dataset instead of --dataset
    model = load_model(model_path, arch, trust=trust)
    dev = resolve_device(device)
    calib, ev = _splits(dataset, data_dir, calib_size, user)
    frs = frontiers(model.to(dev), layer, calib, ev, methods=list(dict.fromkeys(methods)))
    table = pd.concat([f.table for f in frs.values()], ignore_index=True)
    rec = {m: f.recommend(tol) for m, f in frs.items()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "frontier.csv") as tmp:
        table.to_csv(tmp, index=False)
    png = _figure(table, rec, out)
    first = next(iter(frs.values()))
    full = float(first.table.acc.iloc[-1])
    for m, k in rec.items():
        acc = float(frs[m].table.set_index("k").acc[k])
        click.echo(f"{m}: k={k} of {first.width} keeps {100 * acc:.2f}% "
                   f"(full layer {100 * full:.2f}%)")
    click.echo(f"recommended width of {layer}: {rec[first.method]} "
               f"(method {first.method}, tol {tol})")
    click.echo(str(out / "frontier.csv"))
    click.echo(str(png))
