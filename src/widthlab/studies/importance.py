"""The importance study (journal: "Evaluate Inference time influence of multiple neurons
orderings"): how close are cheap proxies to the exact importance of a neuron, and what does each
ordering cost at inference when only its top k neurons are kept?

One engine run per dataset trains one-hidden-layer MLPs of a few widths and seeds. After the
last epoch an engine hook (:class:`ImportanceHook`) scores every neuron of every model on the
validation split, exactly (:func:`widthlab.metrics.importance.exact_importance`, the loss increase
when the neuron alone is zeroed) and by each proxy, then keeps the top k neurons of each
ordering (and of a random one) and measures test accuracy versus k, with the forward latency of
the cut dense MLP. Everything is stored with the run; tables, figures and verdicts are recomputed
from the store.

Example::

    from widthlab.studies import importance

    run_id = importance.run("mnist", profile="quick", store="widthlab-runs")
    importance.agreement_table("widthlab-runs", run_id)   # one row per model x proxy
    importance.topk_table("widthlab-runs", run_id)        # one row per model x ordering x k

or ``widthlab study importance --dataset both --profile quick``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

from widthlab.engine import TrainConfig, train
from widthlab.errors import UsageError
from widthlab.metrics.importance import (
    PROXIES,
    agreement,
    dense_latency,
    exact_importance,
    k_grid,
    k_to_reach,
    proxies,
    topk_accuracy,
)
from widthlab.metrics.ordering import kendall_tau, ordering
from widthlab.metrics.variance import Verdict
from widthlab.nn import ModelSpec
from widthlab.nn.widths import sqrt2_widths
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.studies._common import (
    dataset_option,
    datasets_for,
    device_option,
    display_name,
    newest_runs,
    parse_seeds,
    profile_option,
    quiet_option,
    store_option,
    sweep_specs,
)

STUDY = "importance"
HOOK_VERSION = 1
#: Orderings of a top-k curve: the exact one, its magnitude (a neuron whose removal *lowers*
#: the loss by a lot matters too), every proxy, and a random permutation.
ORDERINGS = ("exact", "exact_abs", *PROXIES, "random")
#: A cut "keeps the accuracy" when its test accuracy is at most this far below the full layer.
ACC_TOLERANCE = 0.01
#: A proxy "orders like the exact importance" at a mean Kendall tau of at least this.
TAU_GOOD = 0.5


@dataclass(frozen=True)
class Profile:
    """Widths, seeds and epochs of a study profile."""

    widths: tuple[int, ...]
    seeds: int
    epochs: int
    train_size: int | None = None   # None: the whole training split


PROFILES = {
    # ~15 s per dataset on an idle 2-core CPU: 471 steps
    "quick": Profile((64, 256, 1024), seeds=2, epochs=3, train_size=20_000),
    # the journal's one-hidden-layer grid, trained as long as the flexible-layer experiments
    "full": Profile(tuple(sqrt2_widths(32, 2048)), seeds=3, epochs=15),
}


# ------------------------------------------------------------------------------ the hook
def _when(spec: str | tuple[int, ...], epoch: int, last: int) -> bool:
    if spec == "all":
        return True
    if spec == "none":
        return False
    if spec == "last":
        return epoch == last
    return epoch in spec


def _check_when(spec, what: str) -> str | tuple[int, ...]:
    if isinstance(spec, str):
        if spec not in ("all", "last", "none"):
            raise UsageError(f"{what} must be 'all', 'last', 'none' or epoch numbers, got "
                             f"{spec!r}")
        return spec
    return tuple(int(e) for e in spec)


def bank_scale(bank) -> torch.Tensor | None:
    """The product of the bank's modifier scales, ``(H,)`` over all models' first-layer units,
    or None without modifiers (what multiplies each ReLU output at evaluation)."""
    if not len(bank.modifiers):
        return None
    with torch.no_grad():
        s = torch.ones(bank.n_hidden, device=bank.device)
        for mod in bank.modifiers:
            s = s * mod.scale().detach()
    return s


@dataclass(frozen=True)
class ImportanceHook:
    """Engine epoch hook: per-neuron importance scores (and optionally top-k curves).

    On the chosen epochs it stores, for every live model ``m``, the arrays ``imp_exact`` and
    ``imp_<proxy>`` (float64, one value per neuron of hidden layer ``layer``) computed on
    ``split``, plus the metrics ``imp_exact_s`` and ``imp_proxies_s`` (seconds). On the top-k
    epochs it also stores ``topk_k`` (kept counts), ``topk_acc_<ordering>`` and
    ``topk_loss_<ordering>`` on ``topk_split``, and ``topk_ms``: the forward latency of a dense
    MLP cut to ``k`` neurons on the whole ``topk_split`` (measured once per ``k`` per epoch, as it
    depends on ``k`` only). Models with modifiers are scored as they compute: the modifiers'
    scale multiplies the first layer's outputs and is the ``gate`` proxy.

    Parameters
    ----------
    split : str
        Split the scores are computed on ("val" by default: held out from training).
    record : "all", "last", "none" or tuple of int
        Epochs with scores.
    topk : "all", "last", "none" or tuple of int
        Epochs with top-k curves (they need scores: those epochs are scored too).
    topk_split : str
        Split the top-k accuracy and latency are measured on.
    layer : int
        Hidden layer scored.
    max_samples : int or None
        Score on the first ``max_samples`` samples of ``split`` only.
    latency_repeats : int
        Best-of count of each latency measurement.
    """

    split: str = "val"
    record: str | tuple[int, ...] = "last"
    topk: str | tuple[int, ...] = "last"
    topk_split: str = "test"
    layer: int = 0
    max_samples: int | None = None
    latency_repeats: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "record", _check_when(self.record, "record"))
        object.__setattr__(self, "topk", _check_when(self.topk, "topk"))
        for s in (self.split, self.topk_split):
            if s not in ("train", "val", "test"):
                raise UsageError(f"unknown split {s!r}; choose train, val or test")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"max_samples must be >= 1 or None, got {self.max_samples}")

    def describe(self) -> dict:
        """Settings entering the run's fingerprint."""
        return {"kind": "ImportanceHook", "version": HOOK_VERSION, **asdict(self)}

    def __call__(self, engine, epoch: int) -> list:
        last = engine.cfg.epochs
        want_topk = _when(self.topk, epoch, last)
        if not (want_topk or _when(self.record, epoch, last)):
            return []
        bank = engine.bank
        data = engine.data.split(self.split)
        if len(data) == 0:
            raise UsageError(f"the {self.split} split is empty; the importance hook needs "
                             "samples (set val_size > 0 or score on another split)")
        x, y = data.x[:self.max_samples], data.y[:self.max_samples]
        scale_all = bank_scale(bank)
        rows: list = []
        cut_models = []
        for m in range(bank.n_models):
            if not engine.state.alive[m]:
                continue
            mlp = bank.export(m)
            a, b = bank.slices[m]
            scale = None if scale_all is None else scale_all[a:b]
            t0 = time.perf_counter()
            exact = exact_importance(mlp, x, y, layer=self.layer, scale=scale)
            t1 = time.perf_counter()
            prox = proxies(mlp, x, y, layer=self.layer, scale=scale,
                           gates=scale if self.layer == 0 else None)
            t2 = time.perf_counter()
            rows += [ArrayRow(m, epoch, "imp_exact", exact),
                     *(ArrayRow(m, epoch, f"imp_{k}", v) for k, v in prox.items()),
                     MetricRow(m, epoch, self.split, "imp_exact_s", t1 - t0),
                     MetricRow(m, epoch, self.split, "imp_proxies_s", t2 - t1)]
            if want_topk:
                rows += self._topk(engine, m, epoch, mlp, scale, {"exact": exact, **prox})
                cut_models.append((m, mlp))
        if cut_models:
            rows += self._latency(engine, epoch, cut_models)
        return rows

    def _topk(self, engine, m: int, epoch: int, mlp, scale, scores: dict) -> list:
        test = engine.data.split(self.topk_split)
        orders = {k: ordering(v) for k, v in scores.items()}
        orders["exact_abs"] = ordering(np.abs(scores["exact"]))
        width = len(orders["exact"])
        orders["random"] = np.random.default_rng([m, epoch]).permutation(width)
        ks = k_grid(width)
        curves = topk_accuracy(mlp, test.x, test.y, orders, ks, layer=self.layer, scale=scale)
        rows = [ArrayRow(m, epoch, "topk_k", np.asarray(ks, dtype=np.int64))]
        for name, c in curves.groupby("ordering", sort=False):
            rows += [ArrayRow(m, epoch, f"topk_acc_{name}", c["acc"].to_numpy(np.float64)),
                     ArrayRow(m, epoch, f"topk_loss_{name}", c["loss"].to_numpy(np.float64))]
        return rows

    def _latency(self, engine, epoch: int, models: list) -> list:
        test = engine.data.split(self.topk_split)
        widest = max(models, key=lambda t: t[1].sizes[self.layer + 1])[1]
        ks = sorted({k for _, mlp in models for k in k_grid(mlp.sizes[self.layer + 1])})
        lat = dense_latency(widest, test.x, ks, layer=self.layer, repeats=self.latency_repeats)
        ms = dict(zip(lat["k"], lat["ms"], strict=True))
        return [ArrayRow(m, epoch, "topk_ms",
                         np.array([ms[k] for k in k_grid(mlp.sizes[self.layer + 1])]))
                for m, mlp in models]


# ------------------------------------------------------------------------------ training
def specs_for(widths: Sequence[int], seeds: int | Sequence[int]) -> list[ModelSpec]:
    """One ModelSpec per width x seed (``seeds`` a count, 3 = seeds 0, 1, 2, or a list)."""
    return sweep_specs(widths, seeds, "importance")


def config_for(dataset: str, profile: str = "quick", *, widths: Sequence[int] | None = None,
               seeds: int | Sequence[int] | None = None, epochs: int | None = None,
               **train_options) -> tuple[list[ModelSpec], TrainConfig]:
    """The engine's models and config for a profile, with optional overrides."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
    p = PROFILES[profile]
    specs = specs_for(widths if widths is not None else p.widths,
                      seeds if seeds is not None else p.seeds)
    train_options.setdefault("train_size", p.train_size)
    cfg = TrainConfig(dataset=dataset, epochs=epochs if epochs is not None else p.epochs,
                      stats_epochs="none", eval_splits=("val", "test"), study=STUDY,
                      **train_options)
    return specs, cfg


def run(dataset: str, profile: str = "quick", *, store: Store | str = "widthlab-runs",
        widths: Sequence[int] | None = None, seeds: int | Sequence[int] | None = None,
        epochs: int | None = None, progress: bool = True, data=None,
        hook: ImportanceHook | None = None, **train_options) -> str:
    """Train (or resume, or find done) the study's run on ``dataset``; returns the run id.

    ``train_options`` go to :class:`~widthlab.engine.TrainConfig`; ``data`` replaces the
    dataset's splits (tests); ``hook`` replaces the default :class:`ImportanceHook` (scores and
    top-k curves after the last epoch).
    """
    specs, cfg = config_for(dataset, profile, widths=widths, seeds=seeds, epochs=epochs,
                            **train_options)
    return train(specs, cfg, store, progress=progress, data=data,
                 hooks=[hook or ImportanceHook()])


# ------------------------------------------------------------------------------ reading
def _store(store) -> Store:
    return store if isinstance(store, Store) else Store(store)


def score_arrays(store: Store | str, run_id: str, epoch: int | None = None
                 ) -> dict[int, dict[str, np.ndarray]]:
    """``{model: {score name: (H,) array}}`` at ``epoch`` (None: the last scored epoch); score
    names are ``exact`` and the proxies (the ``imp_`` prefix dropped)."""
    st = _store(store)
    models = st.models(run_id)
    exact = st.arrays(run_id, "imp_exact", epoch)
    out: dict[int, dict[str, np.ndarray]] = {int(m): {"exact": v} for m, v in exact.items()}
    for name in PROXIES:
        try:
            arrs = st.arrays(run_id, f"imp_{name}", epoch)
        except UsageError:
            continue  # e.g. no gates in this run
        for m, v in arrs.items():
            if m in out:
                out[m][name] = v
    ok = set(models.loc[models.status == "ok", "model"].astype(int))
    return {m: v for m, v in out.items() if m in ok}


def _model_info(st: Store, run_id: str) -> pd.DataFrame:
    return st.models(run_id).set_index("model")


def agreement_table(store: Store | str, run_id: str, epoch: int | None = None) -> pd.DataFrame:
    """One row per model x proxy: Spearman, Kendall tau-b and top-10%/25% overlap of the proxy
    with the exact importance, and ``kendall_abs``, Kendall tau-b with its magnitude (from the
    stored scores)."""
    st = _store(store)
    info = _model_info(st, run_id)
    parts = []
    for m, scores in score_arrays(st, run_id, epoch).items():
        width = scores["exact"].size
        ks = (max(1, width // 10), max(1, width // 4))
        t = agreement(scores["exact"], {k: v for k, v in scores.items() if k != "exact"}, ks)
        t = t.rename(columns={f"top{ks[0]}": "top10%", f"top{ks[1]}": "top25%"})
        # magnitude proxies (all >= 0) can only rank |exact|: how well they do that
        t["kendall_abs"] = [kendall_tau(np.abs(scores["exact"]), scores[p]) for p in t.proxy]
        t.insert(0, "seed", int(info.loc[m, "seed"]))
        t.insert(0, "width", width)
        t.insert(0, "model", m)
        parts.append(t)
    if not parts:
        raise UsageError(f"run {run_id!r} stored no importance scores")
    return pd.concat(parts, ignore_index=True)


def topk_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model x ordering x k: ``acc``, ``loss`` (on the top-k split), ``ms`` (the
    cut model's forward latency) and ``full_acc`` (the model with every neuron)."""
    st = _store(store)
    info = _model_info(st, run_id)
    ks = st.arrays(run_id, "topk_k")
    ms = st.arrays(run_id, "topk_ms")
    parts = []
    for m, k in ks.items():
        if info.loc[m, "status"] != "ok":
            continue
        for name in ORDERINGS:
            try:
                acc = st.array(run_id, m, f"topk_acc_{name}")
                loss = st.array(run_id, m, f"topk_loss_{name}")
            except UsageError:
                continue
            parts.append(pd.DataFrame({"model": m, "width": int(k.max()),
                                       "seed": int(info.loc[m, "seed"]), "ordering": name,
                                       "k": k, "acc": acc, "loss": loss, "ms": ms[m]}))
    if not parts:
        raise UsageError(f"run {run_id!r} stored no top-k curves")
    table = pd.concat(parts, ignore_index=True)
    full = table[table.k == table.width].groupby("model")["acc"].first()
    table["full_acc"] = table["model"].map(full)
    return table


def proxy_summary(agree: pd.DataFrame) -> pd.DataFrame:
    """Mean over models of each proxy's agreement, best first (by Kendall tau)."""
    cols = [c for c in ("spearman", "kendall", "top10%", "top25%", "kendall_abs") if c in agree]
    return (agree.groupby("proxy")[cols].mean().sort_values("kendall", ascending=False)
            .reset_index())


def cut_summary(topk: pd.DataFrame, tolerance: float = ACC_TOLERANCE) -> pd.DataFrame:
    """Per model x ordering: the smallest kept count whose test accuracy is within
    ``tolerance`` of the full layer (``k_keep``, None if none), its latency, and the mean
    accuracy over the k grid (``mean_acc``: the area under the accuracy-vs-log-k curve)."""
    rows = []
    for (m, name), c in topk.groupby(["model", "ordering"], sort=False):
        c = c.sort_values("k")
        k = k_to_reach(c, float(c["full_acc"].iloc[0]) - tolerance)
        rows.append({"model": m, "width": int(c["width"].iloc[0]), "seed": int(c["seed"].iloc[0]),
                     "ordering": name, "k_keep": k,
                     "ms_keep": float(c.loc[c.k == k, "ms"].iloc[0]) if k else np.nan,
                     "ms_full": float(c["ms"].iloc[-1]), "mean_acc": float(c["acc"].mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ verdicts
def closest_proxy(agree: pd.DataFrame) -> Verdict:
    """Which proxy ranks neurons most like the exact importance (mean Kendall tau over
    models); holds when that proxy reaches :data:`TAU_GOOD`."""
    s = proxy_summary(agree)
    best = s.iloc[0]
    others = "; ".join(f"{r.proxy} {r.kendall:.2f}" for r in s.iloc[1:].itertuples())
    mag = s.sort_values("kendall_abs", ascending=False).iloc[0]
    text = (f"{best.proxy} is closest to the exact importance: mean Kendall tau "
            f"{best.kendall:.2f}, Spearman {best.spearman:.2f}, top-25% overlap "
            f"{best['top25%']:.2f} over {agree.model.nunique()} models (others, tau: {others}); "
            f"against its magnitude |exact| the best is {mag.proxy} (tau {mag.kendall_abs:.2f})")
    return Verdict(f"a cheap proxy orders neurons like the exact importance "
                   f"(Kendall tau >= {TAU_GOOD})", bool(best.kendall >= TAU_GOOD), text,
                   {"best": best.proxy, "kendall": s.set_index("proxy")["kendall"].to_dict()})


def best_cut(topk: pd.DataFrame) -> Verdict:
    """Does the exact ordering keep the most accuracy under top-k cuts (highest mean accuracy
    over the k grid, averaged over models)?"""
    cs = cut_summary(topk)
    mean = cs.groupby("ordering")["mean_acc"].mean().sort_values(ascending=False)
    best = mean.index[0]
    ex = mean.get("exact", np.nan)
    parts = "; ".join(f"{k} {v:.3f}" for k, v in mean.items())
    text = (f"{best} keeps the most accuracy under top-k cuts (mean test accuracy over the k "
            f"grid, averaged over models): {parts}")
    return Verdict("the exact ordering keeps the most accuracy when only the top k neurons "
                   "are kept", bool(mean.max() - ex <= 1e-12), text,
                   {"mean_acc": mean.to_dict()})


def inference_gain(topk: pd.DataFrame, tolerance: float = ACC_TOLERANCE) -> Verdict:
    """Inference-time influence on the widest models: the kept count (and latency) that holds
    the full accuracy within ``tolerance``, by the exact order versus a random one."""
    cs = cut_summary(topk, tolerance)
    wide = cs[cs.width == cs.width.max()]
    per = wide.groupby("ordering").agg(k_keep=("k_keep", "mean"), ms_keep=("ms_keep", "mean"),
                                       ms_full=("ms_full", "mean"))
    if "exact" not in per.index or "random" not in per.index:
        raise UsageError("the top-k table needs the exact and the random ordering")
    e, r = per.loc["exact"], per.loc["random"]
    best = per["k_keep"].idxmin()
    width = int(wide.width.iloc[0])
    text = (f"width {width}: keeping the exact top {e.k_keep:.0f} neurons holds the test "
            f"accuracy within {100 * tolerance:.0f} point of the full layer, at "
            f"{e.ms_keep:.2f} ms per test-set forward versus {e.ms_full:.2f} ms for all "
            f"{width}; a random order needs {r.k_keep:.0f} neurons ({r.ms_keep:.2f} ms); "
            f"fewest kept: {best} ({per.loc[best, 'k_keep']:.0f})")
    return Verdict("ordering by exact importance lets a smaller, faster layer keep the accuracy "
                   "(fewer neurons than a random order)", bool(e.k_keep < r.k_keep), text,
                   {"k_keep": per["k_keep"].to_dict(), "ms_keep": per["ms_keep"].to_dict()})


# ------------------------------------------------------------------------------ report
def figures(store: Store | str, run_id: str, out_dir) -> list[tuple[str, Path]]:
    """Draw the run's figures from the store; ``[(caption, png path)]``."""
    from widthlab.report import fig_importance as fi
    from widthlab.report.figures import save

    st = _store(store)
    name = display_name(st.get_run(run_id)["dataset"])
    agree = agreement_table(st, run_id)
    topk = topk_table(st, run_id)
    scores = score_arrays(st, run_id)
    widest = max(scores, key=lambda m: (scores[m]["exact"].size, -m))
    drawn = [
        ("scatter", f"{name}: rank by each proxy against rank by exact importance (widest "
                    "model, seed 0)",
         fi.rank_scatter(scores[widest], f"{name}: proxies vs exact, width "
                                         f"{scores[widest]['exact'].size}")),
        ("agreement", f"{name}: rank agreement with the exact importance versus width (mean "
                      "over seeds)", fi.agreement_vs_width(agree, f"{name}: proxy agreement")),
        ("topk", f"{name}: test accuracy keeping the top k neurons of each ordering, and the "
                 "cut model's forward latency on the test set",
         fi.topk_curves(topk[topk.model == widest], f"{name}: top-k cuts")),
    ]
    return [(cap, save(fig, out_dir, f"{run_id}-{key}")[0]) for key, cap, fig in drawn]


def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """One section per dataset (the newest run of each)."""
    from widthlab.report.html import Section

    st = _store(store)
    sections = []
    for (dataset, _), run_id in sorted(newest_runs(st, run_ids).items()):
        name = display_name(dataset)
        agree, topk = agreement_table(st, run_id), topk_table(st, run_id)
        cuts = cut_summary(topk)
        cut_means = (cuts.groupby(["width", "ordering"])[["k_keep", "ms_keep", "mean_acc"]]
                     .mean().reset_index())
        sections.append(Section(
            title=f"Neuron importance: {name}",
            intro="Exact importance is the increase of the validation loss when one neuron is "
                  "zeroed, computed for all neurons at once from rank-one corrections of the "
                  "logits; proxies are cheap scores; top-k cuts keep the k best neurons of an "
                  "ordering as a smaller dense layer, evaluated on the test set.",
            verdicts=[closest_proxy(agree), best_cut(topk), inference_gain(topk)],
            figures=figures(st, run_id, out_dir),
            tables=[(f"{name}: mean agreement with the exact importance", proxy_summary(agree)),
                    (f"{name}: neurons kept to stay within {100 * ACC_TOLERANCE:.0f} point of "
                     "the full accuracy (mean over seeds)", cut_means)],
            runs=[st.get_run(run_id)]))
    return sections


# ------------------------------------------------------------------------------ CLI
@click.command("importance")
@dataset_option
@profile_option("quick: widths 64, 256, 1024, 2 seeds, 3 epochs of 20,000 images (well under "
                "a minute for both datasets); full: widths 32..2048, 3 seeds, 15 epochs.")
@click.option("--widths", default=None, help="Override: LO:HI (sqrt(2) steps) or a list.")
@click.option("--seeds", default=None, help="Override: a count (3) or a list (0,4,7).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override.")
@device_option
@store_option
@quiet_option
def cli(dataset: str, profile: str, widths: str | None, seeds: str | None, epochs: int | None,
        device: str, store: Path, quiet: bool) -> None:
    """Exact neuron importance versus proxies, and top-k cuts per ordering (accuracy and
    latency versus kept neurons).

    Resumes an interrupted run and reuses a finished one. Prints one run id per dataset.
    """
    from widthlab.nn.widths import parse_widths
    from widthlab.report.console import print_frame

    for name in datasets_for(dataset):
        run_id = run(name, profile, store=store, widths=parse_widths(widths) if widths else None,
                     seeds=parse_seeds(seeds) if seeds else None, epochs=epochs,
                     device=device, progress=not quiet)
        if not quiet:
            print_frame(proxy_summary(agreement_table(store, run_id)).round(3),
                        title=f"{name}: agreement with exact importance ({run_id})")
        click.echo(run_id)
