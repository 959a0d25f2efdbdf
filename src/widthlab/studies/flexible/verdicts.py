"""The flexible-layer study's verdicts: the journal's claims recomputed from its tables.

Each function takes tables of :mod:`widthlab.studies.flexible.analysis` and returns
:class:`~widthlab.metrics.variance.Verdict` objects; :func:`experiment_verdicts` gathers those
of one experiment on one dataset.

Example::

    from widthlab.studies.flexible import analysis, verdicts

    table = analysis.convergence_table("widthlab-runs", run_id)
    for v in verdicts.convergence_verdicts(table):
        print(v.holds, v.text)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from widthlab.errors import UsageError
from widthlab.metrics.variance import Verdict
from widthlab.studies.flexible.config import ARMS, RUNS, SLOPES


def _pct(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{100 * x:.2f}%"


def convergence_verdicts(table: pd.DataFrame) -> list[Verdict]:
    """Does the width converge to the same value from any start (per arm)? Holds iff the range
    of the final widths is below 20% of the range of the starts. Does the accuracy not depend
    on the start? Holds iff Spearman's test of accuracy against start has p >= 0.05."""
    out = []
    for arm, t in table.groupby("arm"):
        per = t.groupby("start").agg(width=("final_width", "median"), acc=("test_acc", "median"))
        starts = per.index.to_numpy(float)
        span = float(np.ptp(per["width"])) if len(per) else float("nan")
        ratio = span / max(float(np.ptp(starts)), 1e-12)
        rho = sps.spearmanr(starts, per["width"]).statistic if len(per) > 2 else float("nan")
        arm_text = "with L2 and a size penalty" if arm == "l2" else "without L2 or penalty"
        out.append(Verdict(
            claim=f"the width converges to the same value from any starting x0 ({arm_text})",
            holds=bool(ratio < 0.2),
            text=(f"{arm_text}: final widths span {span:.1f} neurons ({per['width'].min():.1f} "
                  f"to {per['width'].max():.1f}) for starts spanning {np.ptp(starts):.0f}, "
                  f"ratio {ratio:.2f} (holds below 0.2); Spearman rho(start, width) = "
                  f"{rho:.2f}"),
            numbers={"arm": arm, "span": span, "ratio": ratio, "rho": float(rho)}))
        if len(per) > 2:
            res = sps.spearmanr(starts, per["acc"])
            out.append(Verdict(
                claim=f"the final accuracy does not depend on the starting x0 ({arm_text})",
                holds=bool(not res.pvalue < 0.05),
                text=(f"{arm_text}: test accuracy from {_pct(per['acc'].min())} to "
                      f"{_pct(per['acc'].max())}; Spearman rho(start, accuracy) = "
                      f"{res.statistic:.2f}, p = {res.pvalue:.2g} (holds when p >= 0.05)"),
                numbers={"arm": arm, "rho": float(res.statistic), "p": float(res.pvalue)}))
    return out


def frontier_verdicts(summary: pd.DataFrame, best: pd.DataFrame) -> list[Verdict]:
    """Per arm: flexible vs static of the same width, vs the best static; the plateau; L2."""
    out = []
    for arm, t in summary.groupby("arm"):
        t = t.sort_values("penalty")
        arm_text = "with L2" if arm == "l2" else "without L2"
        if "static_test_acc" in t and t["static_test_acc"].notna().any():
            gap = (t["test_acc"] - t["static_test_acc"]).median()
            out.append(Verdict(
                claim=f"a flexible network is as accurate as a static network of its converged "
                      f"width ({arm_text})",
                holds=bool(gap >= -0.01),
                text=(f"{arm_text}: median over penalties of flexible minus static test "
                      f"accuracy = {100 * gap:+.2f} points (holds at -1 point or better)"),
                numbers={"arm": arm, "gap": float(gap)}))
        b = best[best.arm == arm]
        if len(b):
            flex_best = float(t["test_acc"].max())
            gap = flex_best - float(b["test_acc"].iloc[0])
            out.append(Verdict(
                claim=f"the flexible network reaches the best static accuracy ({arm_text})",
                holds=bool(gap >= -0.01),
                text=(f"{arm_text}: best flexible median test accuracy {_pct(flex_best)} vs "
                      f"full-width static {_pct(float(b['test_acc'].iloc[0]))} "
                      f"({100 * gap:+.2f} points; holds at -1 point or better)"),
                numbers={"arm": arm, "gap": gap}))
        w = t["final_width"].to_numpy(float)
        if len(w) >= 3:
            low = w[:3]  # the three smallest penalties
            spread = float(np.ptp(low) / max(np.max(low), 1e-12))
            out.append(Verdict(
                claim=f"the width reaches a plateau as the penalty vanishes ({arm_text})",
                holds=bool(spread < 0.15),
                text=(f"{arm_text}: widths at the three smallest penalties "
                      f"{', '.join(f'{v:.1f}' for v in low)} differ by {100 * spread:.0f}% of "
                      f"the largest (holds below 15%); at the largest penalty {w[-1]:.1f}"),
                numbers={"arm": arm, "widths": low.tolist(), "spread": spread}))
    if set(ARMS) <= set(summary.arm):
        smallest = summary[summary.penalty == summary.penalty.min()].set_index("arm")
        w_l2, w_none = (float(smallest.loc[a, "final_width"]) for a in ARMS)
        ratio = w_none / max(w_l2, 1e-12)
        out.append(Verdict(
            claim="removing L2 raises the width plateau (the journal saw about 2x)",
            holds=bool(ratio >= 1.2),
            text=(f"at the smallest penalty the median width is {w_l2:.1f} with L2 and "
                  f"{w_none:.1f} without, ratio {ratio:.2f} (holds at 1.2 or more; the journal "
                  f"reported about 2)"),
            numbers={"width_l2": w_l2, "width_none": w_none, "ratio": ratio}))
    return out


def plateau_verdict(table: pd.DataFrame, n: int, outputs: int = 10) -> Verdict:
    """With L2 the output weights of disabled neurons decay to zero; without L2 they keep their
    initial size. ``out_abs`` of an ``off`` neuron is compared with its expected value at
    initialisation, ``outputs / (2 sqrt(N))`` (uniform weights in ``+-1/sqrt(N)``). Holds iff
    the ratio is below 0.2 with L2 and above 0.5 without."""
    init = outputs / (2 * math.sqrt(n))
    ratios = {}
    for arm in ARMS:
        off = table[(table.arm == arm) & (table.zone == "off")]
        ratios[arm] = float(off["out_abs"].mean() / init) if len(off) else float("nan")
    on = table[table.zone == "on"].groupby("arm")["out_abs"].mean()
    holds = bool(ratios["l2"] < 0.2 and ratios["none"] > 0.5)
    return Verdict(
        claim="L2 is why the width plateaus: it zeroes the output weights of disabled neurons",
        holds=holds,
        text=(f"mean sum |output weights| of disabled neurons relative to initialisation: "
              f"{ratios['l2']:.3f} with L2, {ratios['none']:.3f} without (holds below 0.2 and "
              f"above 0.5); enabled neurons: {on.get('l2', float('nan')) / init:.2f} and "
              f"{on.get('none', float('nan')) / init:.2f}"),
        numbers={"off_l2": ratios["l2"], "off_none": ratios["none"]})


def width_order_verdict(widths: dict[str, float]) -> Verdict:
    """MNIST converges to a larger width than FashionMNIST (the journal's surprise)."""
    mn, fa = widths["MNIST"], widths["FashionMNIST"]
    return Verdict(claim="MNIST converges to a larger width than FashionMNIST",
                   holds=bool(mn > fa),
                   text=(f"median width at the smallest penalty without L2: MNIST {mn:.1f}, "
                         f"FashionMNIST {fa:.1f}"),
                   numbers={"mnist": mn, "fashion": fa})


def minima_verdicts(epochs: pd.DataFrame) -> list[Verdict]:
    """Random vs deterministic slope, growth without penalty, random activation."""
    out = []
    last = epochs[epochs.epoch == epochs.epoch.max()]
    by = last.groupby("slope")
    width = by["width_now"].median()
    noise = epochs.groupby("slope")["size_grad_std"].median()
    loss = epochs.groupby("slope")["loss_running"].mean()
    if set(SLOPES) <= set(width.index):
        d, r = (float(width[s]) for s in SLOPES)
        out.append(Verdict(
            claim="a random slope does not help the width grow",
            holds=bool(r <= d),
            text=(f"final median width {r:.1f} with a random slope vs {d:.1f} deterministic "
                  f"(holds when not larger); size-gradient noise (median per-epoch std) "
                  f"{noise['random']:.3g} vs {noise['deterministic']:.3g}; mean batch loss "
                  f"{loss['random']:.4f} vs {loss['deterministic']:.4f}"),
            numbers={"width_random": r, "width_deterministic": d,
                     "noise_random": float(noise["random"]),
                     "noise_deterministic": float(noise["deterministic"]),
                     "loss_random": float(loss["random"]),
                     "loss_deterministic": float(loss["deterministic"])}))
    det = epochs[epochs.slope == "deterministic"].groupby("epoch")["width_now"].median()
    if len(det) >= 2:
        e = det.index.to_numpy(float)
        mid = det.iloc[(len(det) - 1) // 2]
        growth = float(det.iloc[-1] - mid)
        fit = np.polyfit(np.log(e), det.to_numpy(float), 1)
        pred = np.polyval(fit, np.log(e))
        ss = float(((det.to_numpy(float) - det.mean()) ** 2).sum())
        r2 = 1 - float(((det.to_numpy(float) - pred) ** 2).sum()) / ss if ss > 0 else float("nan")
        out.append(Verdict(
            claim="without a size penalty the width keeps growing (it does not converge)",
            holds=bool(growth > 0),
            text=(f"deterministic slope: median width {mid:.1f} at mid-run, "
                  f"{det.iloc[-1]:.1f} at the end ({growth:+.1f}); fit width = "
                  f"{fit[1]:.1f} + {fit[0]:.1f} ln(epoch), R^2 = {r2:.2f}"),
            numbers={"growth": growth, "log_slope": float(fit[0]), "r2": r2}))
    if "size_grad_random_activation" in epochs:
        ra = epochs["size_grad_random_activation"].abs()
        sc = epochs["size_grad_scaler"].abs()
        out.append(Verdict(
            claim="random activation gives the size a zero gradient (unusable)",
            holds=bool(ra.max() == 0 and sc.median() > 0),
            text=(f"largest |dCE/dx0| with Bernoulli masks over {len(ra)} model-epochs: "
                  f"{ra.max():.3g}; with the sigmoid scaler the median is {sc.median():.3g}"),
            numbers={"max_random": float(ra.max()), "median_scaler": float(sc.median())}))
    return out


def pretrained_verdict(epochs: pd.DataFrame) -> Verdict:
    """The more static pretraining, the lower the width reached: holds iff the final median
    width never increases with the pretraining level and ends lower than without pretraining."""
    last = epochs[epochs.epoch == epochs.epoch.max()]
    width = last.groupby("pretrain")["width_now"].median().sort_index()
    loss = last.groupby("pretrain")["loss_running"].median().sort_index()
    w = width.to_numpy(float)
    holds = bool(len(w) >= 2 and np.all(np.diff(w) <= 0) and w[-1] < w[0])
    pairs = ", ".join(f"{int(lv)} epochs: {v:.1f}" for lv, v in width.items())
    losses = ", ".join(f"{v:.4f}" for v in loss)
    return Verdict(claim="the more the network is pretrained, the lower the width it reaches",
                   holds=holds,
                   text=(f"median final width by static pretraining ({pairs}); final running "
                         f"loss {losses}"),
                   numbers={"widths": dict(width.astype(float)), "loss": dict(loss.astype(float))})


def size_only_verdict(epochs: pd.DataFrame, start: pd.Series) -> Verdict:
    """With frozen weights the size gradient is positive (the width shrinks): holds iff the
    median over models of the mean size gradient over epochs is > 0."""
    per = epochs.groupby("model").agg(grad=("size_grad", "mean"), x0=("x0", "last"))
    per["delta"] = per["x0"] - start.reindex(per.index)
    pos = float((epochs["size_grad"] > 0).mean())
    med = float(per["grad"].median())
    return Verdict(
        claim="with frozen weights the size gradient is positive (the width shrinks)",
        holds=bool(med > 0),
        text=(f"median over models of the mean dloss/dx0 = {med:.3g} ({100 * pos:.0f}% of "
              f"model-epochs positive); median change of x0 {per['delta'].median():+.2f} "
              f"neurons"),
        numbers={"median_grad": med, "positive_share": pos,
                 "median_delta": float(per["delta"].median())})


def prune_verdict(tables: Sequence[pd.DataFrame]) -> Verdict | None:
    """prune() keeps the accuracy: every pruned model within 0.5 points of its flexible model."""
    t = pd.concat([x for x in tables if "acc_pruned" in x], ignore_index=True)
    if t.empty:
        return None
    diff = (t["acc_pruned"] - t["test_acc"]).abs()
    return Verdict(claim="pruning to the neurons left of the cut-off (the end of the gray zone) "
                         "keeps the test accuracy",
                   holds=bool(diff.max() <= 0.005),
                   text=(f"largest |pruned - flexible| test accuracy over {len(t)} models: "
                         f"{100 * diff.max():.2f} points (median {100 * diff.median():.2f}; "
                         f"holds within 0.5 points)"),
                   numbers={"max_diff": float(diff.max()), "models": len(t)})



def experiment_verdicts(experiment: str, t: dict) -> list[Verdict]:
    """The verdicts of one experiment (``experiment`` as in :data:`RUNS`) on one dataset, from
    that dataset's tables (``t``: see :meth:`FlexibleStudy.tables`)."""
    if experiment == "convergence":
        out = convergence_verdicts(t["convergence"])
    elif experiment == "frontier":
        out = frontier_verdicts(t["frontier_summary"], t["best_static"])
        out.append(plateau_verdict(t["plateau"], t["n"]))
    elif experiment == "minima":
        out = minima_verdicts(t["minima"])
    elif experiment == "pretrained":
        out = [pretrained_verdict(t["pretrained"])]
    elif experiment == "size-only":
        out = [size_only_verdict(t["size_only"], t["size_only_start"])]
    else:
        raise UsageError(f"unknown experiment {experiment!r}; choose {', '.join(RUNS)}")
    pv = prune_verdict([t["models"][experiment]])
    return out + ([pv] if pv is not None else [])
