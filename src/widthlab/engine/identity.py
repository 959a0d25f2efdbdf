"""One run identity: a key from the config plus a hash of the code that computes the numbers.

Every stored result in widthlab (an engine run, a module run, a stored analysis such as the
PCA study's, a ``widthlab reproduce`` job) is identified by the key of its
:class:`~widthlab.engine.spec.RunSpec`: a hash of what changes its numbers (JSON) and of the
*source code* that computes them (this module). That code is not
listed by hand: :func:`closure` starts from the modules of what a run calls (the trainer, its
model, modifiers and hooks; an analysis' functions) and follows their ``import`` statements
inside widthlab (module level and inside functions, not ``if TYPE_CHECKING:`` blocks), so a
module reached only indirectly (``metrics.importance`` under the frontier's methods) counts.
Editing that code gives new keys, so the next command recomputes; editing anything else (a
figure, a caption, a verdict, a docstring or a comment) keeps the keys, so stored results are
reused and only the report is redrawn.

The walk stops at modules that store, draw, orchestrate or report and never compute a stored
number (:data:`OUTSIDE`: the store, the run lifecycle, the study contract, the UI, the report,
the CLI) and, for a study's job key, at its presentation modules (:data:`PRESENTATION`).

Source is normalised before hashing: comments, blank lines and docstrings do not count (the
module is parsed and its AST dumped without docstrings).

Example::

    from widthlab.engine.identity import closure_hash, run_key

    code = closure_hash("widthlab.engine.trainer", SparsifierGate)  # modules, classes, functions
    key = run_key({"epochs": 3, "lr": 1e-3}, code)                   # 64 hex digits
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

# where every engine run's code starts (its closure holds the optimizer, statistics, bank...)
ENGINE_MODULES = ("widthlab.engine.trainer", "widthlab.nn.modifiers")
# modules (and the packages ending in ".") that never compute a stored number: not followed,
# not hashed
OUTSIDE = ("widthlab", "widthlab.store.", "widthlab.ui.", "widthlab.report.", "widthlab.cli",
           "widthlab.cli_study", "widthlab.cli_options", "widthlab.cli_frontier",
           "widthlab.executors", "widthlab.reproduce", "widthlab.errors", "widthlab._io",
           "widthlab.engine.events", "widthlab.engine.lifecycle", "widthlab.engine.identity",
           "widthlab.engine.spec",
           "widthlab.studies", "widthlab.studies.base", "widthlab.studies.steps")
# a study's modules that only present numbers (never followed from a study's module)
PRESENTATION = ("figures", "verdicts", "sections")


def module_name(obj: object) -> str:
    """The module that defines ``obj`` (a module name, a module, a class, a function, a
    ``functools.partial`` or an instance of a class)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, functools.partial):
        return module_name(obj.func)
    if isinstance(obj, ModuleType):
        return obj.__name__
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj):
        return obj.__module__
    return type(obj).__module__


def _module_source(name: str) -> str:
    """The source text of module ``name`` ("" for a module without Python source); a module
    not imported yet is read from its file, not executed."""
    mod = sys.modules.get(name)
    if mod is not None:
        try:
            return inspect.getsource(mod)
        except (OSError, TypeError):
            return ""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return ""
    return Path(spec.origin).read_text(encoding="utf-8")


def package_modules(package: str) -> list[str]:
    """Every module below ``package`` (itself included), found on disk without importing
    them."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        return []
    names = [package]
    for loc in spec.submodule_search_locations or ():
        for info in pkgutil.iter_modules([loc]):
            child = f"{package}.{info.name}"
            names += package_modules(child) if info.ispkg else [child]
    return names


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _normalised_hash(source: str) -> str:
    try:
        text = ast.dump(_strip_docstrings(ast.parse(source)))
    except SyntaxError:  # pragma: no cover - a module that imports can always be parsed
        text = source
    return hashlib.sha256(text.encode()).hexdigest()


def source_hash(name: str) -> str:
    """Hash of module ``name``'s code, ignoring comments, blank lines and docstrings."""
    return _normalised_hash(_module_source(name))


def code_hash(*objects: object | Iterable[object]) -> str:
    """One hash of the code of every module defining ``objects`` (order does not matter;
    iterables of objects are flattened)."""
    names: set[str] = set()
    for obj in objects:
        if isinstance(obj, list | tuple | set | frozenset):
            names |= {module_name(o) for o in obj}
        else:
            names.add(module_name(obj))
    parts = [f"{n}:{source_hash(n)}" for n in sorted(names)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _outside(name: str) -> bool:
    return any(name == o or (o.endswith(".") and (name + ".").startswith(o)) for o in OUTSIDE)


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module or package inside widthlab (found on disk, not
    imported)."""
    parts = name.split(".")
    if parts[0] != "widthlab":
        return False
    root = Path(__file__).resolve().parents[1]
    path = root.joinpath(*parts[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_package(name: str) -> bool:
    parts = name.split(".")
    return (Path(__file__).resolve().parents[1].joinpath(*parts[1:]) / "__init__.py").is_file()


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node) if not _type_checking(c)]


@functools.cache
def _imports(name: str, source: str) -> tuple[str, ...]:
    """The widthlab modules that module ``name`` (with ``source``) imports."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # pragma: no cover - a module that imports can always be parsed
        return ()
    out: list[str] = []
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "widthlab"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if _is_package(name) else name.rsplit(".", 1)[0]
                pkg = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                base = f"{pkg}.{base}" if base else pkg
            if base.split(".")[0] != "widthlab":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(sub if _is_module(sub) else base)
    return tuple(dict.fromkeys(out))


def closure(*objects: object | Iterable[object], skip: Iterable[str] = ()) -> list[str]:
    """The modules of ``objects`` and every widthlab module they import, transitively (sorted).

    Modules in :data:`OUTSIDE` are neither followed nor returned; modules whose last name is
    in ``skip`` are not followed from other modules. Roots outside widthlab (a user's model)
    are returned themselves, torch and numpy never.
    """
    roots: set[str] = set()
    for obj in objects:
        items = obj if isinstance(obj, list | tuple | set | frozenset) else [obj]
        roots |= {module_name(o) for o in items}
    skip = set(skip)
    seen: set[str] = set()
    todo = [r for r in roots if r.split(".")[0] not in ("torch", "numpy", "builtins")]
    while todo:
        name = todo.pop()
        if name in seen or _outside(name):
            continue
        seen.add(name)
        if name.split(".")[0] != "widthlab":
            continue
        todo += [m for m in _imports(name, _module_source(name))
                 if m.rsplit(".", 1)[-1] not in skip]
    return sorted(seen)


def closure_hash(*objects: object | Iterable[object], skip: Iterable[str] = ()) -> str:
    """:func:`code_hash` of the :func:`closure` of ``objects``."""
    return code_hash(closure(*objects, skip=skip))


def engine_code_hash(*extra: object) -> str:
    """The code hash of an engine run: the closure of the engine's modules and of ``extra``
    (modifiers, hooks, a model's class)."""
    return closure_hash(ENGINE_MODULES, *extra)


def run_key(config: object, code: str) -> str:
    """The key of a stored analysis whose settings are ``config`` (anything JSON can encode
    with ``default=str``; key order does not matter) and whose code is ``code`` (a
    :func:`code_hash`): :meth:`RunSpec.key <widthlab.engine.spec.RunSpec.key>`, the one hash
    of every identity."""
    from widthlab.engine.spec import RunSpec

    return RunSpec("analysis", train=config, code=code).key()


__all__ = ["ENGINE_MODULES", "OUTSIDE", "PRESENTATION", "closure", "closure_hash", "code_hash",
           "engine_code_hash", "module_name", "package_modules", "run_key", "source_hash"]
