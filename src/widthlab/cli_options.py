"""Options and value parsers shared by the ``widthlab`` commands (the command-line layer).

Profile fields of a study become ``widthlab study <name>`` options through
:func:`parse_field`, which reads a field's annotation: ``int``, ``float``, ``str``, ``bool``,
``tuple[int, ...]`` / ``tuple[float, ...]`` / ``tuple[str, ...]`` (comma lists; a ``widths``
field also takes the journal's ``LO:HI`` grid), ``tuple[int, ...] | int`` (seeds: a count or a
list) and ``X | None`` (``none`` for None).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import click

from widthlab.errors import UsageError
from widthlab.nn.widths import parse_widths

store_option = click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("widthlab-runs"),
    show_default="./widthlab-runs",
    envvar="WIDTHLAB_STORE",
    help="Results store folder (holds widthlab.sqlite) [env: WIDTHLAB_STORE].",
)
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="No progress bars or progress lines, no tables.")

#: click context settings of every widthlab command
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


data_option = click.option(
    "--data", "data_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Your own dataset instead of --dataset: a .npz (x, y, optional x_test, y_test), CSV, "
         "TSV or Parquet file (with --target).")
target_option = click.option("--target", default=None,
                             help="The label column of a CSV/TSV/Parquet --data file.")


def _given(name: str) -> bool:
    """Whether the running command's option ``name`` was given (not left at its default)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or name not in ctx.params:
        return False
    source = ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT,
                          click.core.ParameterSource.DEFAULT_MAP)


def user_data(path: Path | None, target: str | None):
    """The DatasetSplits of ``--data PATH`` (None without it); errors name the file.

    ``--data`` together with an explicit ``--dataset``/``--datasets`` is refused: one would
    silently override the other."""
    if path is not None:
        for name in ("dataset", "datasets"):
            if _given(name):
                raise UsageError(f"--data {path} and --{name} both name the data to train on; "
                                 f"give one of them (drop --{name} to use your file)")
    if path is None:
        if target is not None:
            raise UsageError("--target names the label column of a --data file; pass --data "
                             "PATH too")
        return None
    from widthlab.data import load_data

    return load_data(path, target)


def parse_seeds(text: str) -> list[int]:
    """``"3"`` means seeds 0, 1, 2; ``"4,7"`` is an explicit list."""
    try:
        if "," in text:
            seeds = [int(t) for t in text.split(",") if t.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise UsageError(f"cannot read seeds {text!r}: give a count (3) or a list (0,4,7)") \
            from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"seeds must be a positive count or a list of seeds >= 0, got "
                         f"{text!r}; e.g. --seeds 3 or --seeds 0,4,7")
    return seeds


def _items(text: str, cast: type, name: str) -> tuple:
    try:
        out = tuple(cast(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"cannot read --{name} {text!r}: give a comma list, e.g. "
                         f"{'1,2,3' if cast is int else '0,1e-4,1e-3'}") from None
    if not out:
        raise UsageError(f"--{name} needs at least one value")
    return out


def _scalar(tp: Any, text: str, name: str) -> Any:
    if tp is bool:
        return text.lower() in ("1", "true", "yes", "on")
    try:
        return tp(text)
    except ValueError:
        raise UsageError(f"cannot read --{name} {text!r}: expected {tp.__name__}") from None


def parse_field(tp: Any, text: str, name: str) -> Any:
    """The value of profile field ``name`` (annotation ``tp``) given as ``text``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "all"):
            return None
        rest = [a for a in args if a is not type(None)]
        if tuple in {typing.get_origin(a) for a in rest} and int in rest:  # seeds
            return tuple(parse_seeds(text))
        tp = rest[0]
        args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        cast = args[0] if args else str
        if name == "widths" and ":" in text:
            return tuple(parse_widths(text))
        return _items(text, cast, name)
    return _scalar(tp, text, name)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _shown(f: dataclasses.Field) -> str | None:
    """A field's default as ``--help`` shows it (``show`` metadata, else the value)."""
    if "show" in f.metadata:
        return f.metadata["show"]
    if f.default is dataclasses.MISSING:
        return None
    return "none" if f.default is None else str(f.default)


def metavar(tp: Any, name: str) -> str:
    """How ``--help`` names the value of profile field ``name`` of annotation ``tp``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if int in rest and any(typing.get_origin(a) is tuple for a in rest):
            out = "N|LIST"  # seeds: a count or a list
        else:
            out = metavar(rest[0], name)
        return out + "|none" if type(None) in args else out
    if typing.get_origin(tp) is tuple:
        return "LO:HI|LIST" if name == "widths" else "LIST"
    return {int: "INT", float: "FLOAT", bool: "BOOL"}.get(tp, "TEXT")


def profile_params(cls: type, *, suffix: str = "", show_defaults: bool = False
                   ) -> list[click.Option]:
    """One option per field of the profile dataclass ``cls`` (``widthlab study`` and
    ``widthlab train`` both build their options here).

    Every option defaults to None (not given: the profile's value stays). A field's metadata
    gives its ``help``; ``choices`` make a choice option, ``flag`` an ``--x/--no-x`` flag;
    ``option`` the spelling shown instead of the field's name, ``aliases`` older spellings
    still accepted; every other value is text read by :func:`parse_field` (see
    :func:`profile_overrides`).
    """
    params = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        help_ = meta.get("help", "") + suffix
        show = _shown(f) if show_defaults else None
        if meta.get("flag"):
            name = option_name(f.name)
            decls = [f"{name}/--no-{name[2:]}", f.name]
            params.append(click.Option(decls, default=None, help=help_))
            continue
        kind = click.Choice(list(meta["choices"])) if "choices" in meta else None
        # "option": the spelling shown (the field keeps its stored name); "aliases": old
        # spellings still accepted (deprecated), e.g. --prices / --lambdas
        spellings = [option_name(meta.get("option", f.name)),
                     *(option_name(a) for a in meta.get("aliases", ()))]
        params.append(click.Option([*spellings, f.name], type=kind, default=None,
                                   help=help_, show_default=show or False,
                                   metavar=None if kind else metavar(hints[f.name], f.name)))
    return params


def profile_overrides(cls: type, given: dict) -> dict:
    """The typed values of the options :func:`profile_params` made for ``cls`` that were
    given (None: left out); text is read by :func:`parse_field`, flags stay booleans."""
    hints = typing.get_type_hints(cls)
    return {name: parse_field(hints[name], value, name) if isinstance(value, str) else value
            for name, value in given.items() if value is not None}


__all__ = ["data_option", "device_option", "option_name", "parse_field", "parse_seeds",
           "profile_overrides", "profile_params", "quiet_option", "store_option",
           "target_option", "user_data"]
