"""Identity from the code that runs: a stored analysis' id covers the import closure of what
it calls, so an edit to a module it reaches only indirectly recomputes it, while an edit to a
figure or a verdict recomputes nothing. Checked on a real copy of the source, in a child
process that imports the edited copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.engine.child_run import synthetic
from widthlab.engine import TrainConfig, identity, train
from widthlab.nn import ModelSpec
from widthlab.store import Store

ROOT = Path(__file__).resolve().parents[1]
FRONTIER = """
import sys, widthlab
from tests.engine.child_run import synthetic
from widthlab.studies import get_study
from widthlab.studies.base import RunSet
assert widthlab.__file__.startswith(sys.argv[3]), widthlab.__file__
up = {"variance": RunSet("variance", "synthetic", "quick", {"sweep": sys.argv[2]})}
runs = get_study("frontier").run("synthetic", "quick", store=sys.argv[1], data=synthetic(),
                                 device="cpu", upstream=up, methods=("taylor", "exact"))
print(runs["frontiers"])
"""


def frontier_run(src: Path, store: Path, sweep: str) -> str:
    """The frontier study's analysis run id, computed (or found) by the source in ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)]),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", FRONTIER, str(store), sweep, str(src)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_frontier_closure_reaches_what_its_methods_run():
    from widthlab.studies.frontier import analysis

    code = identity.closure(analysis.compute, analysis.config)
    # the hand-written list this replaces missed these three
    assert {"widthlab.metrics.importance", "widthlab.metrics.ordering",
            "widthlab.frontier.path"} <= set(code)
    assert not [m for m in code if m.rsplit(".", 1)[-1] in identity.PRESENTATION]
    assert "widthlab.store.sqlite" not in code  # storing changes no number


def test_an_indirect_edit_recomputes_a_figure_or_verdict_edit_does_not(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "widthlab", src / "widthlab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    store = tmp_path / "store"
    sweep = train([ModelSpec((8,), seed=0), ModelSpec((16,), seed=0)],
                  TrainConfig(dataset="synthetic", epochs=1, device="cpu", study="variance:sweep"),
                  store, data=synthetic())
    first = frontier_run(src, store, sweep)
    done = Store(store).get_run(first)["finished_at"]

    for rel in ("studies/frontier/figures.py", "studies/frontier/verdicts.py"):
        path = src / "widthlab" / rel
        path.write_text(path.read_text() + "\nEDITED = 1\n")
    assert frontier_run(src, store, sweep) == first  # found, not recomputed
    assert Store(store).get_run(first)["finished_at"] == done

    importance = src / "widthlab" / "metrics" / "importance.py"
    importance.write_text(importance.read_text() + "\nEDITED = 1\n")
    second = frontier_run(src, store, sweep)
    assert second != first  # reached only through frontier.methods: recomputed
    st = Store(store)
    assert st.get_run(second)["status"] == "done"
    assert st.metrics(second).value.tolist() == st.metrics(first).value.tolist()
