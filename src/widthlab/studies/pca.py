"""The PCA study (journal: "Investigate PCA based metrics for layer size", and its conjecture):
how many dimensions does a hidden layer really use?

It starts from the variance study's trained width sweep (reused from the store when a finished
run matches, trained through the engine otherwise) and never stores an activation matrix:

1. the hidden pre-activations of every chosen model are streamed over training images into a
   float64 covariance (:class:`widthlab.engine.stats.RunningCovariance`), which is
   eigendecomposed (:class:`widthlab.metrics.pca.Spectrum`): explained-variance spectrum,
   components for 90/95/99% of the variance, participation ratio;
2. on the test set, the reconstruction distance (mean ``||z - proj_k z||``) and the
   reconstruction accuracy (the network's accuracy when ``z`` is replaced by its top-k
   projection before the ReLU and the output layer) versus ``k``
   (:func:`widthlab.metrics.pca.reconstruction`);
3. the journal's conjecture ("no metric of a layer alone can decide its width") by its own
   construction: a trained, undersized model ``M`` labels random inputs; on that task the very
   same layer is exactly right (100% accuracy), and a width sweep trained on it through the
   engine shows how the "right size" moved.

Results are stored as one run labelled ``pca`` (arrays and metrics per model, the source run
in its config) plus the engine run of the conjecture's sweep (``pca:conjecture``).

Example::

    from widthlab.studies import pca

    run_id = pca.run("mnist", "quick", store="widthlab-runs")
    table = pca.summarize("widthlab-runs", run_id)   # one row per width
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

from widthlab import __version__
from widthlab.data.tensors import DatasetSplits, Split, load_splits
from widthlab.engine import TrainConfig, load_bank, train
from widthlab.engine.stats import RunningCovariance
from widthlab.errors import UsageError
from widthlab.metrics.pca import Spectrum, k_grid, reconstruction
from widthlab.metrics.variance import Verdict, accuracy_plateau
from widthlab.nn import ModelSpec
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.studies import variance
from widthlab.studies._common import (
    dataset_option,
    datasets_for,
    device_option,
    display_name,
    parse_seeds,
    pick_profile,
    profile_option,
    quiet_option,
    run_label,
    store_option,
)

STUDY = "pca"
JOURNAL = ("It really looks like there is nothing we can extract from all these metrics based on "
           "the PCA of the activations. Conjecture: there is no metric that takes information "
           "about a layer and determines if it is oversized, undersized or properly sized.")
REQUIRES = ("variance",)  # analyses the variance study's sweep (reproduce runs it first)
ANALYSIS_VERSION = 1  # bump when the analysis' numbers change: old analyses are redone
FRACTIONS = (0.90, 0.95, 0.99)


@dataclass(frozen=True)
class Profile:
    """Which trained models are analysed, and the conjecture's sweep."""

    variance_profile: str              # the width sweep analysed (a variance-study profile)
    seeds: tuple[int, ...] | None      # seeds of that sweep to analyse (None: all)
    cov_samples: int | None            # training images streamed into the covariance (None: all)
    teacher_width: int                 # the conjecture's undersized model M
    conj_widths: tuple[int, ...]       # widths trained on M's noise task
    conj_seeds: int
    conj_train: int                    # noise training inputs
    conj_epochs: int


PROFILES = {
    # about a minute for both datasets here, on top of the quick variance study
    "quick": Profile("quick", seeds=(0,), cov_samples=10_000, teacher_width=22,
                     conj_widths=(4, 8, 16, 22, 32, 64, 128), conj_seeds=2, conj_train=20_000,
                     conj_epochs=3),
    "full": Profile("full", seeds=None, cov_samples=None, teacher_width=22,
                    conj_widths=(4, 8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256),
                    conj_seeds=5, conj_train=55_000, conj_epochs=15),
}


# ------------------------------------------------------------------------------ analysis
def _analysis_id(dataset: str, source: str, prof: Profile, conj: str | None) -> str:
    blob = json.dumps({"v": ANALYSIS_VERSION, "source": source, "profile": asdict(prof),
                       "conjecture": conj}, sort_keys=True)
    return f"{STUDY}-{dataset}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _source_splits(st: Store, source: str) -> DatasetSplits:
    info = st.get_run(source)
    cfg = info["config"]
    return load_splits(info["dataset"], val_size=int(cfg.get("val_size", 5000)),
                       seed=int(cfg.get("data_seed", 0)))


def noise_task(teacher, n_train: int, n_test: int, in_features: int, seed: int,
               name: str) -> DatasetSplits:
    """The conjecture's dataset: standard-normal inputs (the scale of normalised images)
    labelled by ``teacher``'s predictions, so ``teacher`` is 100% accurate on it."""
    g = torch.Generator().manual_seed(int(seed))

    def split(n: int) -> Split:
        x = torch.randn(n, in_features, generator=g)
        with torch.no_grad():
            y = torch.cat([teacher(x[i:i + 4096]).argmax(1) for i in range(0, n, 4096)])
        return Split(x, y)

    return DatasetSplits(name, split(n_train), split(max(n_test // 5, 1)), split(n_test),
                         0.0, 1.0, int(seed))


def analyse(store: Store | str, source: str, prof: Profile, *,
            conjecture_run: str | None = None, device: str = "auto",
            progress: bool = True) -> str:
    """PCA of the trained models of the variance run ``source``; stored, returns its run id.

    Reuses a finished analysis with the same source and settings; an interrupted one (never
    committed) is discarded and redone.
    """
    st = store if isinstance(store, Store) else Store(store)
    info = st.get_run(source)
    if info is None or info["status"] != "done":
        raise UsageError(f"run {source!r} is not a finished run in {st.root}")
    run_id = _analysis_id(info["dataset"], source, prof, conjecture_run)
    done = st.get_run(run_id)
    if done is not None and done["status"] == "done":
        return run_id
    if done is not None:
        st.delete_run(run_id)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                       else ("cpu" if device == "auto" else device))
    t0 = time.perf_counter()
    bank = load_bank(st, source, device=dev)
    models = st.models(source)
    chosen = [int(r.model) for r in models.itertuples()
              if r.status == "ok" and (prof.seeds is None or int(r.seed) in prof.seeds)]
    if not chosen:
        raise UsageError(f"run {source!r} has no finished model with seeds {prof.seeds}")
    data = _source_splits(st, source).to(dev)
    train_x = data.train.x if prof.cov_samples is None else data.train.x[:prof.cov_samples]
    cov = RunningCovariance([bank.slices[m] for m in chosen], device=dev)
    from widthlab.report.progress import step_progress

    batch = 1000
    n_batches = -(-len(train_x) // batch)
    with step_progress(n_batches + len(chosen), f"{run_id}", quiet=not progress) as advance:
        with torch.no_grad():
            for i in range(0, len(train_x), batch):
                cov.update(bank.hidden(train_x[i:i + batch], track=False)[0])
                advance(1)
        metrics, arrays, specs = [], [], []
        for j, m in enumerate(chosen):
            row = models.set_index("model").loc[m]
            w = int(row.width)
            spec = Spectrum.from_covariance(cov.covariance(j).cpu().numpy(),
                                            cov.mean(j).cpu().numpy())
            ks = k_grid(w)
            dist, acc = reconstruction(bank.export(m), spec, data.test.x, data.test.y, ks)
            specs.append({"name": row["name"], "arch": [w], "seed": int(row.seed),
                          "variant": row.variant, "options": {"source_model": m}})
            arrays += [ArrayRow(j, 1, "pca_values", spec.values),
                       ArrayRow(j, 1, "recon_k", np.asarray(ks, dtype=np.int64)),
                       ArrayRow(j, 1, "recon_dist", dist),
                       ArrayRow(j, 1, "recon_acc", acc)]
            metrics += [MetricRow(j, 1, "train", f"n{int(f * 100)}", spec.n_components(f))
                        for f in FRACTIONS]
            metrics += [MetricRow(j, 1, "train", "participation_ratio",
                                  spec.participation_ratio()),
                        MetricRow(j, 1, "train", "total_var", spec.total),
                        MetricRow(j, 1, "test", "acc", float(acc[-1]))]
            advance(1)
    st.create_run(run_id, study=STUDY, dataset=info["dataset"],
                  config={"source_run": source, "profile": asdict(prof),
                          "analysis_version": ANALYSIS_VERSION, "cov_samples": len(train_x),
                          "conjecture_run": conjecture_run},
                  models=specs, seed=0, device=str(dev), precision="fp64",
                  code_version=f"widthlab {__version__} pca {ANALYSIS_VERSION}")
    st.commit_epoch(run_id, 1, metrics=metrics, arrays=arrays,
                    timings={"analysis_s": round(time.perf_counter() - t0, 3)})
    st.finish_run(run_id, "done")
    return run_id


def _teacher_and_task(st: Store, source: str, prof: Profile):
    """The conjecture's teacher M (the sweep's width closest to ``prof.teacher_width``,
    lowest seed) and its noise task, rebuilt deterministically from the stored run."""
    models = st.models(source)
    ok = models[models.status == "ok"]
    if ok.empty:
        raise UsageError(f"run {source!r} has no trained model to act as the teacher")
    # the sweep's width closest (in log scale) to the profile's teacher width
    w = int(ok.width.iloc[np.argmin(np.abs(np.log(ok.width.to_numpy(float))
                                          - np.log(prof.teacher_width)))])
    m = int(ok[ok.width == w].sort_values("seed").model.iloc[0])
    teacher = load_bank(st, source).export(m).eval()
    name = f"noise-{source[-12:]}-m{m}"
    return teacher, noise_task(teacher, prof.conj_train, 10_000, teacher.sizes[0], seed=m,
                               name=name)


def conjecture(store: Store | str, source: str, prof: Profile, *, device: str = "auto",
               progress: bool = True) -> str:
    """Train the conjecture's width sweep on the noise task labelled by ``source``'s model of
    width ``prof.teacher_width``; returns the engine run id (reused when done)."""
    st = store if isinstance(store, Store) else Store(store)
    _, data = _teacher_and_task(st, source, prof)
    specs = [ModelSpec((w,), seed=s) for w in prof.conj_widths for s in range(prof.conj_seeds)]
    cfg = TrainConfig(dataset=data.name, epochs=prof.conj_epochs, val_size=len(data.val),
                      stats_epochs="none", eval_splits=("test",), device=device,
                      study=run_label(STUDY, "conjecture"))
    return train(specs, cfg, st, data=data, progress=progress)


def run(dataset: str, profile: str | Profile = "quick", *,
        store: Store | str = "widthlab-runs", widths: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None, epochs: int | None = None, device: str = "auto",
        progress: bool = True, **train_options) -> str:
    """The PCA study on ``dataset``: the variance sweep (reused or trained), its PCA analysis
    and the conjecture's sweep. Returns the analysis run id.

    ``profile`` is a name of :data:`PROFILES` or a :class:`Profile`. ``widths``/``seeds``/
    ``epochs`` and ``train_options`` (e.g. ``train_size``) override the analysed sweep (a
    variance run with exactly those settings is reused when stored, trained otherwise).
    """
    prof = pick_profile(PROFILES, profile, Profile)
    if seeds is not None:
        prof = Profile(**{**asdict(prof), "seeds": tuple(int(s) for s in seeds)})
    source = variance.run(dataset, prof.variance_profile, store=store, widths=widths,
                          seeds=list(seeds) if seeds is not None else None, epochs=epochs,
                          device=device, progress=progress, **train_options)
    conj = conjecture(store, source, prof, device=device, progress=progress)
    return analyse(store, source, prof, conjecture_run=conj, device=device, progress=progress)


# ------------------------------------------------------------------------------ reading
def load(store: Store | str, run_id: str) -> dict:
    """Everything an analysis stored: ``table`` (one row per model), ``curves`` (per model:
    values, recon_k, recon_dist, recon_acc), the source run's per-width summary and the
    conjecture run id."""
    st = store if isinstance(store, Store) else Store(store)
    info = st.get_run(run_id)
    if info is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    models = st.models(run_id)
    met = st.metrics(run_id)
    table = met.pivot_table(index="model", columns="name", values="value").reset_index()
    table = models[["model", "width", "seed"]].merge(table, on="model")
    curves = {name: st.arrays(run_id, name) for name in
              ("pca_values", "recon_k", "recon_dist", "recon_acc")}
    source = info["config"]["source_run"]
    return {"info": info, "table": table, "curves": curves, "source": source,
            "source_summary": variance.summarize(st, source),
            "conjecture_run": info["config"].get("conjecture_run")}


def summarize(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per width: components for 90/95/99%, participation ratio, the smallest k whose
    reconstruction accuracy is within half a point of the plain accuracy, the plain test
    accuracy (means over the analysed seeds)."""
    d = load(store, run_id)
    t = d["table"].copy()
    k_ok = []
    for m in t.model:
        ks, acc = d["curves"]["recon_k"][m], d["curves"]["recon_acc"][m]
        k_ok.append(int(ks[np.argmax(acc >= acc[-1] - 0.005)]))
    t["k_recon"] = k_ok
    cols = ["n90", "n95", "n99", "participation_ratio", "k_recon", "total_var", "acc"]
    out = t.groupby("width")[cols].mean().reset_index()
    out.insert(1, "models", t.groupby("width").size().to_numpy())
    return out.rename(columns={"acc": "test_acc"})


# ------------------------------------------------------------------------------ verdicts
ESTIMATES = {"n90": "components for 90% of the variance",
             "n95": "components for 95% of the variance",
             "n99": "components for 99% of the variance",
             "participation_ratio": "participation ratio",
             "k_recon": "components keeping the accuracy within 0.5 points"}


def separation_verdict(mnist: pd.DataFrame, fashion: pd.DataFrame) -> Verdict:
    """Does any PCA-based estimate rank FashionMNIST (the harder task) above MNIST?

    For each estimate, the ratio FashionMNIST / MNIST at every common width; an estimate
    separates the datasets in the direction of difficulty when the ratio exceeds 1.1 at three
    quarters of the widths or more.
    """
    common = sorted(set(mnist.width) & set(fashion.width))
    a = mnist.set_index("width").loc[common]
    b = fashion.set_index("width").loc[common]
    parts, numbers, any_sep = [], {}, False
    for key, label in ESTIMATES.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = b[key].to_numpy(float) / a[key].to_numpy(float)
        share = float(np.mean(ratio > 1.1)) if len(ratio) else 0.0
        med = float(np.nanmedian(ratio)) if len(ratio) else float("nan")
        sep = share >= 0.75
        any_sep |= sep
        numbers[key] = {"median_ratio": med, "share_above_1.1": share}
        parts.append(f"{label}: median FashionMNIST/MNIST ratio {med:.2f}, above 1.1 at "
                     f"{share:.0%} of {len(common)} widths")
    head = ("a PCA-based estimate separates FashionMNIST from MNIST in the direction of task "
            "difficulty" if any_sep else
            "no PCA-based estimate separates FashionMNIST from MNIST in the direction of task "
            "difficulty (the journal's finding)")
    return Verdict(claim="some PCA estimate ranks the harder dataset higher", holds=any_sep,
                   text=f"{head}: " + "; ".join(parts), numbers=numbers)


def monotone_verdict(d: dict, tol: float = 0.005) -> Verdict:
    """Reconstruction accuracy is non-decreasing in k to within ``tol`` for every model."""
    drops = []
    for acc in d["curves"]["recon_acc"].values():
        drops.append(float(max(0.0, -np.min(np.diff(acc)))) if len(acc) > 1 else 0.0)
    worst = max(drops) if drops else 0.0
    ok = worst <= tol
    return Verdict(claim="reconstruction accuracy grows with k", holds=ok,
                   text=f"reconstruction accuracy is non-decreasing in k within "
                        f"{tol * 100:.1f} points for {'every' if ok else 'not every'} model "
                        f"(largest drop {worst * 100:.2f} points over {len(drops)} models); "
                        "k = width reproduces the plain test accuracy exactly",
                   numbers={"largest_drop": worst})


def conjecture_verdict(store: Store | str, d: dict) -> Verdict:
    """The journal's construction, with the numbers."""
    st = store if isinstance(store, Store) else Store(store)
    conj = d["conjecture_run"]
    summ = d["source_summary"]
    prof = d["info"]["config"]["profile"]
    teacher, task = _teacher_and_task(st, d["source"], Profile(**prof))
    w = int(teacher.sizes[1])
    plateau1 = accuracy_plateau(summ.width, summ.test_acc)
    acc1 = float(summ.set_index("width").loc[w, "test_acc"])
    best1 = float(summ.test_acc.max())
    met = st.metrics(conj)
    last = met[(met.name == "acc") & (met.split == "test")]
    last = last[last.epoch == last.epoch.max()]
    models = st.models(conj)
    per_w = last.merge(models[["model", "width"]], on="model").groupby("width").value.mean()
    plateau2 = int(accuracy_plateau(per_w.index.to_numpy(), per_w.to_numpy()))
    # the teacher on its own task (100% by construction; recomputed, not assumed)
    with torch.no_grad():
        teacher_acc = float((teacher(task.test.x).argmax(1) == task.test.y).double().mean())
    undersized = acc1 < best1 - 0.005
    moved = plateau2 != plateau1
    holds = undersized and moved and teacher_acc == 1.0
    text = (f"the same layer M ({w} neurons, weights unchanged, so every weights-only metric "
            f"is unchanged) reaches {acc1:.1%} test accuracy on the image task, below the best "
            f"{best1:.1%} (plateau from {plateau1} neurons: undersized), and {teacher_acc:.0%} on "
            f"random inputs labelled by M (right-sized by construction); networks trained on "
            f"that noise task reach their accuracy plateau ({per_w.max():.1%}) from "
            f"{plateau2} neurons. The right size moved from {plateau1} to {plateau2} while "
            "the layer stayed the same" + ("" if holds else
                                           " (not cleanly shown in this run: see the numbers)"))
    return Verdict(claim="no layer-only metric can decide the width (journal conjecture)",
                   holds=holds, text=text,
                   numbers={"teacher_width": w, "image_acc": acc1, "image_plateau": plateau1,
                            "teacher_noise_acc": teacher_acc,
                            "noise_plateau": int(plateau2)})


# ------------------------------------------------------------------------------ report
def figures(store: Store | str, run_id: str, out_dir) -> list[tuple[str, Path]]:
    from widthlab.report import fig_pca as fp
    from widthlab.report.figures import save

    st = store if isinstance(store, Store) else Store(store)
    d = load(st, run_id)
    name = display_name(d["info"]["dataset"])
    summ = summarize(st, run_id)
    plateau = accuracy_plateau(d["source_summary"].width, d["source_summary"].test_acc)
    drawn = [
        ("explained variance per component, selected widths", "spectra",
         fp.spectra(d, f"{name}: PCA spectra")),
        ("reconstruction distance versus k", "distance",
         fp.recon_curves(d, "recon_dist", "mean ||z - proj_k z||", f"{name}: reconstruction "
                         "distance")),
        ("reconstruction accuracy versus k (test set)", "recon_acc",
         fp.recon_curves(d, "recon_acc", "test accuracy", f"{name}: reconstruction accuracy")),
        ("effective dimension versus width, accuracy plateau marked", "effective_dim",
         fp.effective_dimension(summ, plateau, f"{name}: effective dimension")),
    ]
    if d["conjecture_run"]:
        drawn.append(("the conjecture: accuracy versus width on the image task and on the "
                      "noise task labelled by the teacher", "conjecture",
                      fp.conjecture(d["source_summary"], _conj_table(st, d["conjecture_run"]),
                                    _teacher_width(st, d),
                                    f"{name}: conjecture")))
    return [(f"{name}: {cap}", save(fig, out_dir, f"{run_id}-{key}")[0])
            for cap, key, fig in drawn]


def _teacher_width(st: Store, d: dict) -> int:
    return int(_teacher_and_task(st, d["source"], Profile(**d["info"]["config"]["profile"]))[0]
               .sizes[1])


def _conj_table(st: Store, conj: str) -> pd.DataFrame:
    met = st.metrics(conj)
    last = met[(met.name == "acc") & (met.split == "test")]
    last = last[last.epoch == last.epoch.max()]
    t = last.merge(st.models(conj)[["model", "width"]], on="model")
    return t.groupby("width").value.mean().rename("test_acc").reset_index()


def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """One section per dataset (newest analysis of each) and the cross-dataset verdict."""
    from widthlab.report.html import Section

    st = store if isinstance(store, Store) else Store(store)
    analyses = [r for r in run_ids if st.get_run(r)["study"] == STUDY]
    newest: dict[str, str] = {}
    for r in analyses:
        info = st.get_run(r)
        if info["dataset"] not in newest or (info["finished_at"] or "") >= (
                st.get_run(newest[info["dataset"]])["finished_at"] or ""):
            newest[info["dataset"]] = r
    sections, summaries = [], {}
    for dataset in sorted(newest, key=lambda s: (s != "mnist", s)):
        r = newest[dataset]
        d = load(st, r)
        summ = summarize(st, r)
        summaries[dataset] = summ
        verdicts = [monotone_verdict(d)]
        if d["conjecture_run"] and st.get_run(d["conjecture_run"]):
            verdicts.append(conjecture_verdict(st, d))
        runs = [st.get_run(r), st.get_run(d["source"])]
        if d["conjecture_run"] and st.get_run(d["conjecture_run"]):
            runs.append(st.get_run(d["conjecture_run"]))
        sections.append(Section(
            title=f"PCA of pre-activations: {display_name(dataset)}",
            intro="Covariance of the hidden pre-activations streamed in float64 over training "
                  f"images ({d['info']['config']['cov_samples']}), eigendecomposed per model; "
                  "reconstruction on the test set. Journal conclusion: nothing in these "
                  "PCA metrics explains the size difference between the datasets.",
            verdicts=verdicts, figures=figures(st, r, out_dir),
            tables=[(f"{display_name(dataset)}: per width", summ.round(4))], runs=runs))
    if {"mnist", "fashion-mnist"} <= set(summaries):
        sections.append(Section(
            title="PCA: MNIST versus FashionMNIST",
            verdicts=[separation_verdict(summaries["mnist"], summaries["fashion-mnist"])]))
    return sections


# ------------------------------------------------------------------------------ CLI
@click.command("pca")
@dataset_option
@profile_option("quick: PCA of seed 0 of the quick variance sweep (covariance over 10,000 "
                "training images) and a small conjecture sweep; full: every seed of the full "
                "sweep over the whole training split.")
@click.option("--widths", default=None, help="Override the analysed sweep: LO:HI or a list.")
@click.option("--seeds", default=None, help="Override: seeds to train and analyse (3 or 0,4).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override.")
@device_option
@store_option
@quiet_option
def cli(dataset: str, profile: str, widths: str | None, seeds: str | None, epochs: int | None,
        device: str, store: Path, quiet: bool) -> None:
    """PCA of the hidden pre-activations of a width sweep: spectra, components for 90/95/99%,
    participation ratio, reconstruction distance and accuracy versus k, and the journal's
    conjecture. Reuses a stored variance run (or trains it). Prints one run id per dataset.
    """
    from widthlab.nn.widths import parse_widths
    from widthlab.report.console import print_frame

    for name in datasets_for(dataset):
        run_id = run(name, profile, store=store,
                     widths=parse_widths(widths) if widths else None,
                     seeds=parse_seeds(seeds) if seeds else None, epochs=epochs,
                     device=device, progress=not quiet)
        if not quiet:
            print_frame(summarize(store, run_id).round(3),
                        ["width", "n90", "n95", "n99", "participation_ratio", "k_recon",
                         "test_acc"], title=f"{name}: {run_id}")
        click.echo(run_id)
