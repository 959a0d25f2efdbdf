"""benchmarks/bench_reach.py: the harness (per-side alarm, one child per model, result lines,
figures last) on the smallest model of the zoo."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch_pruning")
pytest.importorskip("torchvision")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_reach.py")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_reach", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alarm_interrupts_a_side_and_is_disarmed_after():
    bench = load_bench()
    t0 = time.perf_counter()
    with pytest.raises(bench.SideTimeout, match="timed out after 1 s"):
        with bench.alarm(1):
            while True:  # a hang in Python code, as Torch-Pruning's graph building
                pass
    assert time.perf_counter() - t0 < 5
    with bench.alarm(1):
        pass
    time.sleep(1.2)  # no alarm left behind


def test_one_model_end_to_end_prints_a_line_per_model_and_the_counts_last():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT]))
    out = subprocess.run([sys.executable, BENCH, "--models", "torch.TransformerEncoder",
                          "--timeout", "120"], capture_output=True, text=True, timeout=300,
                         env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("torch.TransformerEncoder widthlab=")
    tp = lines[0].split(" tp=", 1)[1]
    assert tp.startswith("ok params=17088->"), tp  # Torch-Pruning halves the FFN and heads
    after = int(tp.split("->", 1)[1].split()[0])
    assert 0 < after < 17088
    assert lines[-2:] == [f"widthlab_models_ok={int(' widthlab=ok' in lines[0])}",
                          "tp_models_ok=1"]
    assert lines[1] == "models=1"


def test_unknown_models_are_refused_with_the_names_to_choose_from():
    out = subprocess.run([sys.executable, BENCH, "--models", "resnet19"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src")))
    assert out.returncode == 2
    assert "unknown models ['resnet19']" in out.stderr and "nanogpt" in out.stderr
