"""The PCA study's stored analysis: spectra and reconstruction of a trained width sweep.

Never stores an activation matrix: the hidden pre-activations of every chosen model are
streamed over training images into a float64 covariance
(:class:`widthlab.engine.stats.RunningCovariance`), which is eigendecomposed
(:class:`widthlab.metrics.pca.Spectrum`): explained-variance spectrum, components for
90/95/99% of the variance, participation ratio. On the test set: the reconstruction distance
(mean ``||z - proj_k z||``) and the reconstruction accuracy (the network's accuracy when ``z``
is replaced by its top-k projection) versus ``k`` (:func:`widthlab.metrics.pca.reconstruction`).

The result is one run labelled ``pca`` (arrays and metrics per analysed model; the source run,
the profile and the conjecture run in its config), computed by :func:`analyse` as the study's
:class:`~widthlab.studies.base.StoredAnalysis` step, whose id comes from :func:`config`.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from widthlab.data.tensors import DatasetSplits, load_splits
from widthlab.engine import TrainConfig, load_bank
from widthlab.engine.events import Reporter
from widthlab.engine.lifecycle import Result
from widthlab.engine.stats import RunningCovariance
from widthlab.errors import UsageError
from widthlab.metrics.pca import Spectrum, k_grid, reconstruction
from widthlab.nn.bank import MLPBank
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.studies.base import RunContext
from widthlab.studies.pca.config import FRACTIONS, PCAProfile
from widthlab.studies.pca.teacher import source_run

BATCH = 1000  # training images per covariance update


def config(ctx: RunContext) -> dict:
    """What identifies an analysis: its source run, its profile and the conjecture run."""
    return {"source_run": source_run(ctx), "profile": ctx.profile.to_dict(),
            "conjecture_run": ctx.runs.get("conjecture")}


def source_splits(st: Store, source: str) -> DatasetSplits:
    """The splits the variance run ``source`` was trained on (its dataset, split settings)."""
    info = st.get_run(source)
    cfg = info["config"]
    return load_splits(info["dataset"], val_size=int(cfg.get("val_size", 5000)),
                       seed=int(cfg.get("data_seed", 0)))


def chosen_models(models: pd.DataFrame, prof: PCAProfile, source: str) -> list[int]:
    """The finished models of the sweep with the profile's seeds (all seeds: None)."""
    chosen = [int(r.model) for r in models.itertuples()
              if r.status == "ok" and (prof.seeds is None or int(r.seed) in prof.seeds)]
    if not chosen:
        raise UsageError(f"run {source!r} has no finished model with seeds {prof.seeds}; "
                         "pick seeds the variance sweep trained (--seeds) or none for all")
    return chosen


def _model_rows(j: int, spec: Spectrum, ks: list[int], dist: np.ndarray,
                acc: np.ndarray) -> tuple[list[MetricRow], list[ArrayRow]]:
    """The stored numbers of analysed model ``j``."""
    arrays = [ArrayRow(j, 1, "pca_values", spec.values),
              ArrayRow(j, 1, "recon_k", np.asarray(ks, dtype=np.int64)),
              ArrayRow(j, 1, "recon_dist", dist),
              ArrayRow(j, 1, "recon_acc", acc)]
    metrics = [MetricRow(j, 1, "train", f"n{int(f * 100)}", spec.n_components(f))
               for f in FRACTIONS]
    metrics += [MetricRow(j, 1, "train", "participation_ratio", spec.participation_ratio()),
                MetricRow(j, 1, "train", "total_var", spec.total),
                MetricRow(j, 1, "test", "acc", float(acc[-1]))]
    return metrics, arrays


def _covariance(bank: MLPBank, chosen: list[int], train_x: torch.Tensor, dev: torch.device,
                report: Reporter) -> RunningCovariance:
    cov = RunningCovariance([bank.slices[m] for m in chosen], device=dev)
    with torch.no_grad():
        for i in range(0, len(train_x), BATCH):
            cov.update(bank.hidden(train_x[i:i + BATCH], track=False)[0])
            report.step()
    return cov


def analyse(ctx: RunContext) -> Result:
    """PCA of the chosen models of the analysed variance run (stored by the study as a run
    of its own)."""
    st, prof, source = ctx.store, ctx.profile, source_run(ctx)
    info = st.get_run(source)
    dev = TrainConfig(device=ctx.device).resolved_device()
    t0 = time.perf_counter()
    bank = load_bank(st, source, device=dev)
    models = st.models(source)
    chosen = chosen_models(models, prof, source)
    data = (ctx.data if ctx.data is not None else source_splits(st, source)).to(dev)
    train_x = data.train.x if prof.cov_samples is None else data.train.x[:prof.cov_samples]
    report = Reporter(ctx.progress, ctx.what, -(-len(train_x) // BATCH) + len(chosen), 0)
    cov = _covariance(bank, chosen, train_x, dev, report)
    metrics, arrays, specs = [], [], []
    by_model = models.set_index("model")
    for j, m in enumerate(chosen):
        row = by_model.loc[m]
        spec = Spectrum.from_covariance(cov.covariance(j).cpu().numpy(),
                                        cov.mean(j).cpu().numpy())
        ks = k_grid(int(row.width))
        dist, acc = reconstruction(bank.export(m), spec, data.test.x, data.test.y, ks)
        specs.append({"name": row["name"], "arch": [int(row.width)], "seed": int(row.seed),
                      "variant": row.variant, "options": {"source_model": m}})
        rows = _model_rows(j, spec, ks, dist, acc)
        metrics += rows[0]
        arrays += rows[1]
        report.step()
    result = Result(info["dataset"], models=specs, metrics=metrics, arrays=arrays,
                    config={**config(ctx), "cov_samples": len(train_x)}, device=str(dev),
                    precision="fp64", timings={"analysis_s": round(time.perf_counter() - t0, 3)})
    report.done(0)
    return result
