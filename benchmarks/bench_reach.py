"""Reach: which models of issue 28's list widthlab and Torch-Pruning 1.6 can halve.

For every model of ``tests/zoo.py`` (torchvision, timm, Hugging Face transformers from tiny
configs, ``nn.TransformerEncoder``, a nanoGPT-style GPT; random init, small inputs), in one
child process per model:

* **widthlab**: ``widthlab.units.build_graph(model, *inputs)``, then for every group
  ``remove_units`` of every other unit (``floor(size / 2)`` units; attention groups count whole
  heads as units), a forward pass whose output has the original shape, and the parameter count;
* **Torch-Pruning 1.6**: ``torch_pruning.pruner.MetaPruner`` with ``MagnitudeImportance(p=2)``,
  ``pruning_ratio=0.5``, the classifier / language-model head (the layer writing the output)
  ignored, ``output_transform`` picking the logits of Hugging Face outputs, and for attention
  its heads option (``num_heads`` of the q/k/v projections,
  ``prune_num_heads=True``, ``head_pruning_ratio=0.5``, head dims kept), followed by the
  attribute updates its own examples make after pruning (``num_heads``, ``head_dim``, ...);
  then the same forward check and parameter count.

Each side of each model runs under ``--timeout`` seconds (``signal.alarm`` in the child, and the
child is killed past twice that: Torch-Pruning's graph building hangs on some models). A model
"works" when its side ran to a forward pass of the original output shape with fewer parameters.
One line per model, then the figures, one ``name=value`` per line, ``widthlab_models_ok`` and
``tp_models_ok`` last.

    PYTHONPATH=src python benchmarks/bench_reach.py [--models nanogpt,hf.LlamaForCausalLM]
        [--timeout 120] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SideTimeout(Exception):
    pass


@contextmanager
def alarm(seconds: int):
    """Raise :class:`SideTimeout` in the main thread after ``seconds``."""

    def ring(signum, frame):
        raise SideTimeout(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_forward(model, inputs, shape) -> None:
    import torch
    from tests.zoo import output_tensor

    with torch.no_grad():
        out = output_tensor(model(*inputs))
    if tuple(out.shape) != shape:
        raise RuntimeError(f"output shape {tuple(out.shape)} after pruning, {shape} before")
    if not torch.isfinite(out).all():
        raise RuntimeError("non-finite output after pruning")


# --- widthlab -----------------------------------------------------------------------------


def run_widthlab(model, inputs, shape) -> dict:
    from widthlab.units import build_graph, remove_units

    before = n_params(model)
    t0 = time.perf_counter()
    graph = build_graph(model, *inputs)
    graph_s = time.perf_counter() - t0
    groups = list(graph.groups)
    kinds: dict[str, int] = {}
    for group in groups:
        kinds[group.kind] = kinds.get(group.kind, 0) + 1
        drop = list(range(1, group.size, 2))  # every other unit: floor(size / 2) of them
        if drop:
            remove_units(model, graph, group, drop)
    check_forward(model, inputs, shape)
    return {"params": [before, n_params(model)], "groups": len(groups),
            "kinds": kinds, "graph_s": round(graph_s, 3)}


# --- Torch-Pruning ------------------------------------------------------------------------


def output_layers(model, name):
    """The layers whose out-features are the model's output: Torch-Pruning ignores them."""
    from torch import nn

    if name.startswith("hf."):
        return [getattr(model, a) for a in ("lm_head", "classifier") if hasattr(model, a)]
    if name == "torch.TransformerEncoder":
        return [model.layers[-1].linear2]  # the residual stream is the output
    if name == "nanogpt":
        return [model.lm_head]
    return [m for m in model.modules()  # ImageNet's 1000 classes (squeezenet: a 1x1 conv)
            if isinstance(m, nn.Linear) and m.out_features == 1000
            or isinstance(m, nn.Conv2d) and m.out_channels == 1000]


def attention_layers(model) -> list[tuple[object, str, list]]:
    """``(module, family, q/k/v projections)`` of each attention layer Torch-Pruning can split
    into heads, recognised by the attributes each library's attention module has."""
    from torch import nn

    found = []
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            found.append((m, "mha", [m]))
        elif hasattr(m, "q_proj") and hasattr(m, "k_proj") and hasattr(m, "head_dim"):
            found.append((m, "llama", [m.q_proj, m.k_proj, m.v_proj]))
        elif hasattr(m, "query") and hasattr(m, "attention_head_size"):  # BERT, HF ViT
            found.append((m, "bert", [m.query, m.key, m.value]))
        elif hasattr(m, "qkv") and hasattr(m, "attn_dim"):  # timm
            found.append((m, "timm", [m.qkv]))
        elif hasattr(m, "qkv") and hasattr(m, "num_heads"):  # torchvision Swin
            found.append((m, "swin", [m.qkv]))
        elif hasattr(m, "c_attn") and hasattr(m, "split_size"):  # GPT-2 (Conv1D)
            found.append((m, "gpt2", [m.c_attn]))
        elif hasattr(m, "c_attn") and hasattr(m, "n_head"):  # nanoGPT
            found.append((m, "nanogpt", [m.c_attn]))
    return found


def heads_of(m, family: str) -> list[int]:
    """The number of heads of each projection of an attention layer (kv heads for Llama's k/v)."""
    if family == "mha":
        return [m.num_heads]
    if family == "llama":
        n, kv = m.q_proj.out_features // m.head_dim, m.k_proj.out_features // m.head_dim
        return [n, kv, kv]
    if family == "bert":
        return [m.num_attention_heads] * 3
    return [m.n_head if family == "nanogpt" else m.num_heads]


def width_of(proj) -> int:
    return proj.nf if hasattr(proj, "nf") else proj.out_features  # GPT-2's Conv1D: nf


def tp_fix_attributes(model, layers, head_dims) -> None:
    """After pruning, the size attributes forward reads, set from the pruned projections as
    Torch-Pruning's examples do (``num_heads``, ``head_dim``, ...); ``head_dims`` were read
    before pruning (heads are removed whole, so they do not change)."""
    for m, family, projs in layers:
        hd = head_dims[m]
        if family == "llama":
            m.num_key_value_groups = (m.q_proj.out_features // hd) // (m.k_proj.out_features // hd)
        elif family == "bert":
            m.all_head_size = m.query.out_features
            m.num_attention_heads = m.all_head_size // hd
        elif family in ("timm", "swin"):
            m.num_heads = width_of(projs[0]) // 3 // hd
            if family == "timm":
                m.attn_dim = m.num_heads * hd
        elif family == "gpt2":
            m.num_heads = width_of(projs[0]) // 3 // hd
            m.embed_dim = m.split_size = m.num_heads * hd
        elif family == "nanogpt":
            m.n_head = width_of(projs[0]) // 3 // hd
            m.n_embd = m.n_head * hd
    if hasattr(model, "hidden_dim") and hasattr(model, "conv_proj"):  # torchvision ViT
        model.hidden_dim = model.conv_proj.out_channels


def run_tp(model, inputs, shape, name) -> dict:
    import torch_pruning as tp
    from tests.zoo import output_tensor

    before = n_params(model)
    layers = attention_layers(model)
    heads, head_dims = {}, {}
    for m, family, projs in layers:
        counts = heads_of(m, family)
        heads.update(zip(projs, counts, strict=True))
        fused = 3 if family in ("timm", "swin", "gpt2", "nanogpt") else 1
        head_dims[m] = (m.embed_dim if family == "mha" else width_of(projs[0]) // fused) \
            // counts[0]
    pruner = tp.pruner.MetaPruner(
        model, inputs[0] if len(inputs) == 1 else inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5, ignored_layers=output_layers(model, name),
        num_heads=heads, prune_num_heads=bool(heads), prune_head_dims=False,
        head_pruning_ratio=0.5 if heads else 0.0,
        output_transform=output_tensor,  # Hugging Face output objects -> logits
    )
    pruner.step()
    tp_fix_attributes(model, layers, head_dims)
    check_forward(model, inputs, shape)
    return {"params": [before, n_params(model)], "heads_layers": len(heads)}


# --- one model in a child process ---------------------------------------------------------


def child(name: str, timeout: int, threads: int) -> None:
    """Run both sides on ``name``; print one ``RESULT {json}`` line per side as it ends."""
    import warnings

    warnings.filterwarnings("ignore")
    sys.path.insert(0, ROOT)
    import torch

    torch.set_num_threads(threads)
    from tests import zoo

    for side in ("widthlab", "tp"):
        t0 = time.perf_counter()
        try:
            with alarm(timeout):
                model, inputs = zoo.build(name)
                with torch.no_grad():
                    shape = tuple(zoo.output_tensor(model(*inputs)).shape)
                if side == "widthlab":
                    result = run_widthlab(model, inputs, shape)
                else:
                    result = run_tp(model, inputs, shape, name)
            before, after = result["params"]
            if after >= before:
                raise RuntimeError(f"nothing removed ({before} parameters before and after)")
            result["ok"] = True
        except BaseException as err:  # noqa: BLE001 -- every failure is a result here
            msg = " ".join(str(err).split())[:160]
            result = {"ok": False, "error": f"{type(err).__name__}: {msg}"}
        result.update(side=side, seconds=round(time.perf_counter() - t0, 2))
        print("RESULT " + json.dumps(result), flush=True)


def run_one(name: str, timeout: int, threads: int) -> dict[str, dict]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name,
           "--timeout", str(timeout), "--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(ROOT, "src"), ROOT, os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * timeout + 60,
                              env=env)
        out = proc.stdout
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        tail = [f"killed after {2 * timeout + 60} s"]
    results = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            results[r["side"]] = r
    for side in ("widthlab", "tp"):
        results.setdefault(side, {"ok": False, "error": f"child process died: {tail[0][:160]}"})
    return results


def describe(r: dict) -> str:
    if not r["ok"]:
        return f"error: {r['error']}"
    before, after = r["params"]
    extra = ""
    if "groups" in r:
        kinds = ",".join(f"{k}:{n}" for k, n in sorted(r["kinds"].items()))
        extra = f" groups={r['groups']} ({kinds}) graph_s={r['graph_s']}"
    return f"ok params={before}->{after} ({after / before:.3f}){extra}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated names (default: all)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per model and side")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.timeout, args.threads)
        return 0
    sys.path.insert(0, ROOT)
    from tests.zoo import BUILDERS

    names = [n for n in args.models.split(",") if n] or list(BUILDERS)
    unknown = sorted(set(names) - set(BUILDERS))
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {sorted(BUILDERS)}")
    ok = {"widthlab": 0, "tp": 0}
    t0 = time.perf_counter()
    for name in names:
        results = run_one(name, args.timeout, args.threads)
        for side in ok:
            ok[side] += bool(results[side]["ok"])
        print(f"{name} widthlab={describe(results['widthlab'])} tp={describe(results['tp'])}",
              flush=True)
    print(f"models={len(names)}")
    print(f"wall_s={time.perf_counter() - t0:.1f}")
    print(f"widthlab_models_ok={ok['widthlab']}")
    print(f"tp_models_ok={ok['tp']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
