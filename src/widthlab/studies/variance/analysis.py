"""The variance study's tables: pure numpy/pandas on stored numbers (recomputed per report).

:func:`collect` gathers per-width arrays from a finished run, :func:`summarize` turns them into
one row per width (see :func:`widthlab.metrics.variance.width_summary`), :func:`mixture_summary`
fits the two mixtures of the journal and :func:`turning_points` says where each metric calls a
layer oversized.

Example::

    from widthlab.studies.variance import analysis

    table = analysis.summarize("widthlab-runs", run_id)   # one row per width
    mix = analysis.mixture_summary(analysis.collect("widthlab-runs", run_id))
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from widthlab.errors import UsageError
from widthlab.fit import ConvergenceWarning, ExponentialNormalMixture, GammaMixture, fit_many
from widthlab.metrics import first_crossing, most_normal_width
from widthlab.metrics.variance import width_summary
from widthlab.store import Store

SPLITS = ("train", "val", "test")
MIN_FIT = 20  # alive neurons a width needs (over all seeds) for the mixture fits


def collect(store: Store | str, run_id: str) -> dict:
    """Per-width inputs of :func:`width_summary` from a finished run, read from the store.

    Returns ``{"stds": {w: [array per seed]}, "dead": {...}, "accuracy": {split: {w: [acc]}},
    "failed": [model indices]}``; failed models are left out (their arrays were never stored).
    """
    st = Store.open(store)
    info = st.require_run(run_id)
    models = st.models(run_id)
    if (models["arch"].map(len) != 1).any():
        raise UsageError(f"run {run_id!r} has multi-layer models; the variance study needs "
                         "one hidden layer")
    stds_by_model = st.arrays(run_id, "act_std")
    dead_by_model = st.arrays(run_id, "dead")
    m = st.metrics(run_id)
    m = m[(m.name == "acc") & (m.epoch == int(info["epochs_done"]))]
    acc = {(int(r.model), r.split): float(r.value) for r in m.itertuples()}
    stds: dict[int, list] = {}
    dead: dict[int, list] = {}
    accuracy: dict[str, dict[int, list]] = {s: {} for s in SPLITS}
    failed = []
    for row in models.itertuples():
        w = int(row.width)
        if row.status != "ok" or row.model not in stds_by_model:
            failed.append(int(row.model))
            continue
        stds.setdefault(w, []).append(stds_by_model[row.model])
        dead.setdefault(w, []).append(dead_by_model[row.model].astype(bool))
        for split in SPLITS:
            if (int(row.model), split) in acc:
                accuracy[split].setdefault(w, []).append(acc[(int(row.model), split)])
    if not stds:
        raise UsageError(f"run {run_id!r} stored no neuron statistics (did it finish? "
                         "see `widthlab runs show`)")
    return {"stds": stds, "dead": dead, "accuracy": {s: v for s, v in accuracy.items() if v},
            "failed": failed}


def summarize(store: Store | str, run_id: str, collected: dict | None = None) -> pd.DataFrame:
    """One row per width: Shapiro W/p of the pooled stds, total std, dead neurons and accuracy
    per split, each per-replicate mean with a 95% interval; plus ``dataset`` and ``run_id``.
    ``collected``: :func:`collect`'s result for this run, when already read."""
    st = Store.open(store)
    c = collect(st, run_id) if collected is None else collected
    table = width_summary(c["stds"], c["dead"], c["accuracy"])
    table.insert(0, "dataset", st.get_run(run_id)["dataset"])
    table.insert(0, "run_id", run_id)
    return table


def mixture_summary(c: dict) -> pd.DataFrame:
    """Per width, the share of *useless* neurons by two mixtures fitted to the pooled stds.

    ``c`` is :func:`collect`'s result. For each width the per-neuron stds of all replicates are
    pooled (as the journal did) and fitted with a two-gamma and an exponential+normal mixture
    (:mod:`widthlab.fit`, one batched EM per family). Dead neurons (std exactly 0) are
    excluded from the fits and counted as useless: ``useless = (dead + w0 * alive) / all``
    where ``w0`` is the weight of the near-zero component.
    """
    widths = sorted(c["stds"])
    pooled = [np.concatenate([np.asarray(a, dtype=np.float64) for a in c["stds"][w]])
              for w in widths]
    out = pd.DataFrame({"width": widths})
    # a width with fewer than MIN_FIT alive neurons in all (tiny test sweeps) gets NaN
    ok = [int((p > 0).sum()) >= MIN_FIT and np.ptp(p[p > 0]) > 0 for p in pooled]
    fit_arrays = [p for p, good in zip(pooled, ok, strict=True) if good]
    for col, model in (("gamma_useless", GammaMixture()),
                       ("expnormal_useless", ExponentialNormalMixture())):
        useless = np.full(len(widths), np.nan)
        converged = np.zeros(len(widths), dtype=bool)
        if fit_arrays:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fits = fit_many(model, fit_arrays, as_frame=True)
            alive, zeros = fits["n"].to_numpy(float), fits["n_zeros"].to_numpy(float)
            useless[ok] = (zeros + fits["weight_0"].to_numpy() * alive) / (alive + zeros)
            converged[ok] = fits["converged"].to_numpy()
        out[col] = useless
        out[f"{col.split('_')[0]}_converged"] = converged
    return out


def turning_points(summary: pd.DataFrame, mixtures: pd.DataFrame) -> dict[str, float | None]:
    """The width at which each metric says "oversized from here".

    - gamma / exp+normal mixtures: the useless share first reaches one half (more useless than
      useful neurons), interpolated in log width;
    - Shapiro W: the width of its maximum (the most normal distribution);
    - dead neurons: the first width where the mean dead count is above zero (the journal notes
      any other threshold would be arbitrary).
    """
    dead = summary["dead"].to_numpy(float)
    return {
        "two-gamma mixture": first_crossing(mixtures["width"], mixtures["gamma_useless"], 0.5),
        "exp+normal mixture": first_crossing(mixtures["width"],
                                             mixtures["expnormal_useless"], 0.5),
        "Shapiro W": float(most_normal_width(summary)["width"]),
        "dead neurons": first_crossing(summary["width"], (dead > 0).astype(float), 1.0),
    }
