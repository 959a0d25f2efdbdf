"""The size rule of issue 29: no module in src/widthlab over 450 lines, no function over 80.

Also checks that the modules split to meet it still export every name they exported before,
as the same objects, so ``from widthlab.nn.growth import X`` keeps working.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "widthlab"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def offenders(root: Path, max_module: int = MAX_MODULE_LINES,
              max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    """One line per module over ``max_module`` lines and per function (or method) over
    ``max_function`` lines (from its ``def`` line to its last line), below ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(root.parent).as_posix()
        n = len(text.splitlines())
        if n > max_module:
            out.append(f"{name}: {n} lines (module limit {max_module})")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    out.append(f"{name}:{node.lineno} {node.name}(): {length} lines "
                               f"(function limit {max_function})")
    return out


def test_every_module_and_function_is_within_the_limits():
    assert SRC.is_dir(), SRC
    bad = offenders(SRC)
    assert not bad, "split these (issue 29 size rule):\n" + "\n".join(bad)


def test_the_checker_names_a_long_module_and_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(80))  # def line + 80 = 81 lines
    (pkg / "long_fn.py").write_text(f"def too_long():\n{body}\n\n\ndef fine():\n    pass\n")
    (pkg / "ok.py").write_text("def f():\n" + "\n".join(f"    y{i} = {i}" for i in range(79))
                               + "\n")  # 80 lines: allowed
    (pkg / "big.py").write_text("\n".join(f"v{i} = {i}" for i in range(451)) + "\n")
    assert offenders(pkg) == [
        "pkg/big.py: 451 lines (module limit 450)",
        "pkg/long_fn.py:1 too_long(): 81 lines (function limit 80)",
    ]
    method = "class A:\n    async def m(self):\n" + "\n".join(
        f"        z{i} = {i}" for i in range(85)) + "\n"
    (pkg / "big.py").write_text(method)
    assert offenders(pkg) == ["pkg/big.py:2 m(): 86 lines (function limit 80)",
                              "pkg/long_fn.py:1 too_long(): 81 lines (function limit 80)"]


# every public name of the six modules split for the rule, and where it now lives
SPLIT = {
    "widthlab.metrics.importance": {
        "widthlab.metrics._importance_kernel": ["SUPPORTED_ACTIVATIONS", "activation_of"],
        "widthlab.metrics._importance_topk": ["agreement", "dense_latency", "k_grid",
                                              "k_to_reach", "keep_neurons", "orderings_of",
                                              "topk_accuracy"],
    },
    "widthlab.nn.flexible": {
        "widthlab.nn._cutoff": ["GRAY_ZONE_FACTOR", "K_RANGE", "PRUNE_THRESHOLD",
                                "cutoff_integral", "cutoff_scale", "cutoff_scale_array",
                                "random_activation", "random_slopes"],
        "widthlab.nn._flexible_cutoff": ["FlexibleCutoff"],
    },
    "widthlab.fit.mixtures": {
        "widthlab.fit._mixture_core": ["solve_gamma_shape"],
        "widthlab.fit._em": ["ConvergenceWarning"],
    },
    "widthlab.metrics.variance": {
        "widthlab.metrics._variance_stats": ["SHAPIRO_MAX_N", "mean_ci", "shapiro"],
        "widthlab.metrics._variance_summary": ["width_summary"],
    },
    "widthlab.nn.bank": {
        "widthlab.nn._model_spec": ["ModelSpec"],
        "widthlab.nn._bank_kernels": ["MIN_ROWS", "init_linear", "init_mlp"],
        "widthlab.nn._bank_resize": ["BankGrowth", "BankShrink"],
    },
    "widthlab.nn.growth": {
        "widthlab.nn._growth_plan": ["INITS", "NOISE_L1", "ROW_NORM", "Benefit",
                                     "BenefitRule", "GrowthPlan"],
        "widthlab.nn._growth_measures": ["outgoing_gradient", "output_error",
                                         "output_weight", "refit_fraction", "removal_costs"],
    },
}


@pytest.mark.parametrize("module", sorted(SPLIT))
def test_split_modules_re_export_the_moved_names(module):
    mod = importlib.import_module(module)
    for home, names in SPLIT[module].items():
        new = importlib.import_module(home)
        for name in names:
            assert getattr(mod, name) is getattr(new, name), f"{module}.{name}"
    for name in getattr(mod, "__all__", ()):
        assert hasattr(mod, name), f"{module}.__all__ names {name}, which it lacks"


def test_split_classes_keep_their_methods():
    from widthlab.nn.bank import MLPBank
    from widthlab.nn.growth import GrowingGate

    for name in ("shrink_", "grow_", "layout_state", "export", "hidden", "head"):
        assert callable(getattr(MLPBank, name)), name
    for name in ("propose", "benefit", "committed", "median_gate", "_candidates", "_select",
                 "_decide", "_gain", "_plan", "_benefit_plan"):
        assert callable(getattr(GrowingGate, name)), name


@pytest.mark.parametrize("module", ["widthlab.metrics.importance",
                                    "widthlab.metrics._importance_kernel",
                                    "widthlab.metrics._importance_topk"])
def test_editing_a_split_scoring_module_changes_the_importance_runs_code_hash(
        monkeypatch, module):
    from widthlab.engine import identity
    from widthlab.metrics.importance_hook import ImportanceHook

    hook = ImportanceHook()
    before = identity.engine_code_hash([], [hook])
    real = identity._module_source
    monkeypatch.setattr(identity, "_module_source",
                        lambda name: real(name) + ("\nEDITED = 1\n" if name == module else ""))
    assert identity.engine_code_hash([], [hook]) != before
