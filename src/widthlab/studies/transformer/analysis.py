"""The transformer study's tables: pure reads of its stored runs (never stored themselves).

- :func:`sweep_table`: per sweep model its FFN width, seed and final validation loss;
- :func:`stats_table`: per FFN width the journal's statistics of the per-neuron activation
  stds pooled over blocks (:func:`widthlab.metrics.width_summary`: Shapiro W, dead neurons,
  summed std), near-constant neurons and a two-component gamma mixture;
- :func:`frontier_table`: the stored frontier rows (one-shot and fine-tuned losses);
- :func:`gated_table`: per gated run its final widths, FFN parameters and loss, beside the
  static model of the same widths trained from scratch;
- :func:`curves_table`: every run's rows per chunk of steps;
- :func:`budget`: steps, seeds and training tokens.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from widthlab.fit import GammaMixture, fit_many
from widthlab.metrics import width_summary
from widthlab.store import Store

NEAR_CONSTANT = 0.01  # std below this fraction of the model's median std
DEAD = 1e-6  # std at or below this: the neuron's output never changes


def unit_runs(st: Store, by_exp: Mapping[str, str]) -> dict[str, str]:
    """Step name -> run id: the manifest's list when there is one, else ``by_exp``."""
    if "manifest" in by_exp:
        return dict(st.require_run(by_exp["manifest"])["config"]["runs"])
    return dict(by_exp)


def _final(st: Store, run_id: str) -> dict:
    met = st.metrics(run_id)
    last = met[met.epoch == met.epoch.max()].set_index(["split", "name"]).value
    widths = {k: int(v) for (s, k), v in last.items() if s == "width"}
    return {"val_loss": float(last[("val", "loss")]),
            "ffn_params": int(last[("train", "ffn_params")]),
            "n_params": int(last[("train", "n_params")]), "widths": widths,
            "epochs": int(met.epoch.max())}


def sweep_table(st: Store, runs: Mapping[str, str]) -> pd.DataFrame:
    rows = []
    for step, run_id in sorted(runs.items()):
        if not step.startswith("sweep-"):
            continue
        _, width, seed = step.split("-")
        f = _final(st, run_id)
        rows.append({"ffn_width": int(width), "seed": int(seed[1:]), "val_loss": f["val_loss"],
                     "ffn_params": f["ffn_params"], "n_params": f["n_params"],
                     "train_s": st.get_run(run_id)["timings"].get("train_s", np.nan)})
    return pd.DataFrame(rows, columns=["ffn_width", "seed", "val_loss", "ffn_params",
                                       "n_params", "train_s"]).sort_values(
        ["ffn_width", "seed"], ignore_index=True)


def _pooled_stds(st: Store, stats_run: str) -> dict[int, list[np.ndarray]]:
    models = st.models(stats_run)
    arrays: dict[int, list[np.ndarray]] = {}
    names = [f"std/{b}" for b in range(int(st.get_run(stats_run)["config"]["blocks"]))]
    per_model: dict[int, list[np.ndarray]] = {}
    for name in names:
        for i, a in st.arrays(stats_run, name).items():
            per_model.setdefault(i, []).append(np.asarray(a, dtype=np.float64))
    for _, m in models.iterrows():
        width = int(m["arch"][0])
        arrays.setdefault(width, []).append(np.concatenate(per_model[int(m["model"])]))
    return arrays


def stats_table(st: Store, stats_run: str, sweep: pd.DataFrame) -> pd.DataFrame:
    """One row per FFN width: the journal's statistics pooled over blocks and seeds, the mean
    final validation loss, near-constant neurons, and the gamma mixture's low component."""
    stds = _pooled_stds(st, stats_run)
    if not stds:
        return pd.DataFrame()
    dead = {w: [a <= DEAD for a in reps] for w, reps in stds.items()}
    out = width_summary(stds, dead=dead)
    loss = sweep.groupby("ffn_width").val_loss.mean()
    out["val_loss"] = [float(loss.get(w, np.nan)) for w in out.width]
    out["near_constant_frac"] = [
        float(np.mean([np.mean(a < NEAR_CONSTANT * np.median(a)) for a in stds[w]]))
        for w in out.width]
    pooled = [np.concatenate(stds[w]) for w in out.width]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = fit_many(GammaMixture(n_components=2, random_state=0),
                        [a[a > DEAD] for a in pooled])
    low = [int(np.argmin(f.means_)) for f in fits]
    out["mix_low_weight"] = [float(f.weights_[i]) for f, i in zip(fits, low, strict=True)]
    out["mix_low_mean"] = [float(f.means_[i]) for f, i in zip(fits, low, strict=True)]
    out["mix_high_mean"] = [float(np.max(f.means_)) for f in fits]
    return out


def frontier_table(st: Store, frontier_run: str) -> pd.DataFrame:
    rows = st.get_run(frontier_run)["config"].get("rows", [])
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    ffn = [sum(v for k, v in w.items() if k.endswith(":out")) for w in df.widths]
    heads = [sum(v for k, v in w.items() if k.endswith(":heads")) for w in df.widths]
    return df.assign(ffn_units=ffn, heads=heads,
                     widths=[_widths_text(w) for w in df.widths]).drop(columns=[])


def _widths_text(w: Mapping[str, int]) -> str:
    ffn = "-".join(str(v) for k, v in sorted(w.items()) if k.endswith(":out"))
    heads = "-".join(str(v) for k, v in sorted(w.items()) if k.endswith(":heads"))
    return f"ffn {ffn} / heads {heads}" if heads else f"ffn {ffn}"


def gated_table(st: Store, runs: Mapping[str, str]) -> pd.DataFrame:
    """Per gated run: its final widths, FFN parameters and loss; the static model of those
    widths (from scratch, same steps) beside it; the dense model's loss and FFN parameters."""
    dense = _final(st, runs["dense"]) if "dense" in runs else None
    rows = []
    for step, run_id in sorted(runs.items()):
        if not step.startswith("gated-"):
            continue
        _, kind, price = step.split("-", 2)
        g = _final(st, run_id)
        static = runs.get(f"static-{kind}-{price}")
        s = _final(st, static) if static else None
        rows.append({"kind": kind, "price": price, "widths": _widths_text(g["widths"]),
                     "ffn_params": g["ffn_params"], "val_loss": g["val_loss"],
                     "static_val_loss": s["val_loss"] if s else np.nan,
                     "dense_val_loss": dense["val_loss"] if dense else np.nan,
                     "dense_ffn_params": dense["ffn_params"] if dense else np.nan})
    df = pd.DataFrame(rows, columns=["kind", "price", "widths", "ffn_params", "val_loss",
                                     "static_val_loss", "dense_val_loss", "dense_ffn_params"])
    return df.assign(ffn_ratio=df.dense_ffn_params / df.ffn_params,
                     vs_dense=df.val_loss - df.dense_val_loss,
                     vs_static=df.val_loss - df.static_val_loss)


def curves_table(st: Store, runs: Mapping[str, str]) -> pd.DataFrame:
    frames = []
    for step, run_id in sorted(runs.items()):
        if step.startswith(("sweep-", "gated-", "static-")) or step == "dense":
            met = st.metrics(run_id)
            met = met[met.split.isin(["val", "train"])]
            wide = met.assign(key=met.split + "/" + met.name).pivot_table(
                index="epoch", columns="key", values="value").reset_index()
            frames.append(wide.assign(step=step))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def samples_table(st: Store, samples_run: str) -> pd.DataFrame:
    return pd.DataFrame(st.get_run(samples_run)["config"].get("samples", []))


def budget(st: Store, runs: Mapping[str, str]) -> str:
    trained = [r for k, r in runs.items() if k.startswith(("sweep-", "gated-", "static-"))]
    if not trained:
        return ""
    t = st.get_run(trained[0])["config"]["train"]
    seeds = len({k.rsplit("-s", 1)[1] for k in runs if k.startswith("sweep-")})
    tokens = t["steps"] * t["batch_size"] * st.get_run(trained[0])["config"]["gpt"]["block_size"]
    return (f"{t['steps']} AdamW steps per model (batch {t['batch_size']}), {tokens:,} "
            f"training tokens; {seeds} seed(s) per sweep width, 1 for the gated and static "
            "models")


__all__ = ["budget", "curves_table", "frontier_table", "gated_table", "samples_table",
           "stats_table", "sweep_table"]
