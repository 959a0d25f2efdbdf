"""One run identity: a key from the config plus a hash of the code that computes the numbers.

Every stored result in widthlab (an engine run, a stored analysis such as the PCA study's, a
``widthlab reproduce`` job) is identified by :func:`run_key`: a hash of its configuration
(JSON) and of the *source code* of the modules that compute its numbers. Editing that code
(the training loop, a modifier, a hook, a declared analysis) gives new keys, so the next
command recomputes; editing anything else (a figure, a caption, a verdict, a docstring or a
comment) keeps the keys, so stored results are reused and only the report is redrawn.

Source is normalised before hashing: comments, blank lines and docstrings do not count (the
module is parsed and its AST dumped without docstrings).

Example::

    from widthlab.engine.identity import code_hash, run_key

    code = code_hash("widthlab.engine.trainer", SparsifierGate)   # modules, classes, functions
    key = run_key({"epochs": 3, "lr": 1e-3}, code)                 # 64 hex digits
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

# the modules whose code computes every engine run's numbers
ENGINE_MODULES = (
    "widthlab.engine.trainer",
    "widthlab.engine.config",
    "widthlab.engine.banks",
    "widthlab.engine.bank_rows",
    "widthlab.engine.lifecycle",
    "widthlab.engine.optim",
    "widthlab.engine.stats",
    "widthlab.nn.bank",
    "widthlab.nn.modifiers",
    "widthlab.data.tensors",
)


def module_name(obj: object) -> str:
    """The module that defines ``obj`` (a module name, a module, a class, a function or an
    instance of a class)."""
    if isinstance(obj, str):
        return obj
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


def engine_code_hash(*extra: object) -> str:
    """The engine's code hash, plus the modules of ``extra`` (modifiers, hooks)."""
    return code_hash(ENGINE_MODULES, *extra)


def run_key(config: object, code: str) -> str:
    """The identity of a stored result: a hash of ``config`` (anything JSON can encode with
    ``default=str``; key order does not matter) and of ``code`` (a :func:`code_hash`)."""
    blob = json.dumps({"config": config, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


__all__ = ["ENGINE_MODULES", "code_hash", "engine_code_hash", "module_name", "package_modules",
           "run_key", "source_hash"]
