"""The resnet study's claims (issue 32's acceptance), recomputed from its tables."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from widthlab.metrics.variance import Verdict
from widthlab.studies.resnet.analysis import LABELS
from widthlab.studies.resnet.config import ALTERNATIVES, DENSE, LEARNED

MIN_RATIO, MAX_DROP, LATENCY_SHARE = 2.5, 0.3, 0.7


def _row(f: pd.DataFrame, method: str):
    g = f[f.method == method] if not f.empty else f
    return g.iloc[0] if len(g) else None


def learned_target(f: pd.DataFrame) -> Verdict:
    """The learned widths reach >= 2.5x fewer multiply-adds than the dense network at <= 0.3
    points below its final-epoch test accuracy (same epochs)."""
    claim = (f"learned widths: >= {MIN_RATIO}x fewer multiply-adds than dense at <= "
             f"{MAX_DROP} points below its accuracy (final epoch, same epochs)")
    d, le = _row(f, DENSE), _row(f, LEARNED)
    if d is None or le is None:
        return Verdict(claim, False, "needs the dense and the learned runs")
    drop = d.acc - le.acc
    holds = bool(le.macs_ratio >= MIN_RATIO and drop <= MAX_DROP)
    return Verdict(claim, holds, f"dense {d.acc:.2f}% at {d.macs / 1e6:.2f}M MACs; learned "
                   f"{le.acc:.2f}% at {le.macs / 1e6:.2f}M MACs ({le.macs_ratio:.2f}x fewer, "
                   f"{drop:+.2f} points below dense).",
                   {"ratio": float(le.macs_ratio), "drop": float(drop)})


def learned_beats_alternatives(f: pd.DataFrame) -> Verdict:
    """The learned network is more accurate than each alternative (b)-(e) at (about) its
    multiply-adds."""
    claim = "learned widths beat (b)-(e) at the same multiply-adds (final-epoch accuracy)"
    le = _row(f, LEARNED)
    alts = [r for m in ALTERNATIVES if (r := _row(f, m)) is not None]
    if le is None or not alts:
        return Verdict(claim, False, "needs the learned run and at least one alternative")
    wins = [bool(le.acc > r.acc) for r in alts]
    parts = "; ".join(f"{LABELS[r.method]} {r.acc:.2f}% at {r.macs / 1e6:.2f}M MACs "
                      f"({r.epochs} epochs)" for r in alts)
    return Verdict(claim, all(wins) and len(alts) == len(ALTERNATIVES),
                   f"learned {le.acc:.2f}% at {le.macs / 1e6:.2f}M MACs ({le.epochs} epochs) "
                   f"against {parts}. More accurate than {sum(wins)} of {len(alts)} (one "
                   "seed: no spread measured).", {"wins": wins})


def latency_falls(f: pd.DataFrame) -> Verdict:
    """Measured batch-64 latency falls with multiply-adds (Spearman > 0 over the final
    networks) and the learned network's speed-up is >= 0.7 of its multiply-add ratio."""
    claim = (f"latency falls with multiply-adds; learned batch-64 speed-up >= {LATENCY_SHARE} "
             "of its MAC ratio")
    g = f.dropna(subset=["latency_b64_ms"]) if not f.empty else f
    le = _row(g, LEARNED)
    if len(g) < 3 or le is None:
        return Verdict(claim, False, "needs the cost analysis of at least three networks")
    rho = float(pd.Series(g.macs.values).corr(pd.Series(g.latency_b64_ms.values),
                                              method="spearman"))
    share = float(le.speedup_b64 / le.macs_ratio)
    eager = float(le.speedup_eager_b64 / le.macs_ratio)
    plain = "" if np.isnan(eager) else (
        f" Plain eager model (NCHW, BatchNorm not folded): {le.speedup_eager_b64:.2f}x "
        f"({eager:.2f} of it).")
    listing = "; ".join(f"{r.method} {r.macs / 1e6:.2f}M MACs {r.latency_b64_ms:.1f} ms "
                        f"(batch 1: {r.latency_b1_ms:.2f} ms)" for r in g.itertuples())
    return Verdict(claim, bool(rho > 0 and share >= LATENCY_SHARE),
                   f"{listing}. Spearman(MACs, latency) {rho:.2f}; learned speed-up "
                   f"{le.speedup_b64:.2f}x at {le.macs_ratio:.2f}x fewer MACs ({share:.2f} of "
                   f"it; BatchNorm folded, channels-last).{plain}",
                   {"rho": rho, "share": share, "eager_share": eager})


def shrinking_is_cheaper(c: pd.DataFrame) -> Verdict:
    """The learned run's last epoch trains faster than its first."""
    claim = "shrinking makes training cheaper: the learned run's last epoch is faster"
    g = c[c.method == LEARNED].sort_values("epoch") if not c.empty else c
    if len(g) < 2:
        return Verdict(claim, False, "needs a learned run of at least two epochs")
    first, last = g.iloc[0], g.iloc[-1]
    d = c[c.method == DENSE].epoch_time
    dense = f"; dense epochs {d.median():.1f}s (median)" if len(d) else ""
    return Verdict(claim, bool(last.epoch_time < first.epoch_time),
                   f"seconds per epoch {', '.join(f'{v:.1f}' for v in g.epoch_time)} while "
                   f"MACs went {', '.join(f'{v / 1e6:.1f}M' for v in g.macs)}{dense}.",
                   {"times": g.epoch_time.tolist()})


def fashion_wider(tables: dict) -> Verdict:
    """FashionMNIST's learned network ends wider (more multiply-adds) than MNIST's."""
    claim = "FashionMNIST ends wider than MNIST (learned multiply-adds)"
    got = {d: _row(tables[d].final, LEARNED) for d in ("mnist", "fashion-mnist") if d in tables}
    if any(v is None for v in got.values()) or len(got) < 2:
        return Verdict(claim, False, "needs the learned runs of both MNIST and FashionMNIST")
    m, f = got["mnist"], got["fashion-mnist"]
    return Verdict(claim, bool(f.macs > m.macs),
                   f"learned MACs: FashionMNIST {f.macs / 1e6:.2f}M ({f.params:.0f} parameters) "
                   f"against MNIST {m.macs / 1e6:.2f}M ({m.params:.0f}).",
                   {"fashion": float(f.macs), "mnist": float(m.macs)})


def variance_agrees(groups: pd.DataFrame) -> Verdict:
    """The journal's signal (the dense network's channels holding 95% of a group's activation
    variance, as a share of its width) ranks the groups as the learned widths do (Spearman
    > 0.5 over the groups)."""
    claim = "the journal's activation-variance signal agrees with the learned widths"
    if len(groups) < 3:
        return Verdict(claim, False, "needs the dense and learned journal statistics")
    a = groups.dense_k95 / groups.width
    b = groups.learned_width / groups.width
    rho = float(a.corr(b, method="spearman"))
    rho = 0.0 if np.isnan(rho) else rho
    pairs = "; ".join(f"{r.group} {r.dense_k95}/{r.width} vs {r.learned_width}"
                      for r in groups.itertuples())
    return Verdict(claim, rho > 0.5, f"per group, dense channels holding 95% of the variance "
                   f"vs learned width: {pairs}. Spearman {rho:.2f}; dead channels in the dense "
                   f"network {int(groups.dense_dead.sum())}, in the learned one "
                   f"{int(groups.learned_dead.sum())}.", {"rho": rho})


def across_seeds(finals: Mapping[int, pd.DataFrame]) -> list[Verdict]:
    """The acceptance's three comparisons over several seeds' ``final`` tables (seed -> the
    table of one run of the study): the 2.5x / 0.3-point target and the latency share on the
    seeds' means (each seed's value listed), and "learned beats (b)-(e)" as the mean of the
    paired per-seed differences (learned - alternative, same seed) above 0 for every
    alternative, each stated with its spread (sample standard deviation over the seeds) and
    whether the mean margin exceeds it."""
    seeds = sorted(finals)
    n = len(seeds)
    rows = {s: {m: _row(finals[s], m) for m in (DENSE, LEARNED, *ALTERNATIVES)} for s in seeds}
    need = [s for s in seeds if rows[s][DENSE] is None or rows[s][LEARNED] is None]
    tag = f"{n} seed{'s' * (n != 1)} ({', '.join(map(str, seeds))})"
    claims = (f"over seeds: learned >= {MIN_RATIO}x fewer MACs at <= {MAX_DROP} points below "
              "dense (seed means)",
              "over seeds: learned beats each of (b)-(e) on the mean paired difference",
              f"over seeds: learned batch-64 speed-up >= {LATENCY_SHARE} of its MAC ratio "
              "(seed mean)")
    if not seeds or need:
        why = f"needs the dense and learned runs of every seed (missing: {need or 'all'})"
        return [Verdict(c, False, why) for c in claims]

    def each(values) -> str:
        return ", ".join(f"{float(v):+.2f}" for v in values)

    def spread(values: np.ndarray) -> float:
        return float(values.std(ddof=1)) if len(values) > 1 else float("nan")

    dense = np.array([rows[s][DENSE].acc for s in seeds], float)
    learned = np.array([rows[s][LEARNED].acc for s in seeds], float)
    ratio = np.array([rows[s][LEARNED].macs_ratio for s in seeds], float)
    drop = dense - learned
    out = [Verdict(claims[0], bool(ratio.mean() >= MIN_RATIO and drop.mean() <= MAX_DROP),
                   f"{tag}: dense {dense.mean():.2f}% (sd {spread(dense):.2f}), learned "
                   f"{learned.mean():.2f}% (sd {spread(learned):.2f}) at {ratio.mean():.3f}x "
                   f"fewer MACs; drop {drop.mean():+.2f} points (per seed {each(drop)}); "
                   f"the target holds on {int(((ratio >= MIN_RATIO) & (drop <= MAX_DROP)).sum())}"
                   f" of {n} seeds.",
                   {"ratio": float(ratio.mean()), "drop": float(drop.mean()),
                    "drop_sd": spread(drop)})]
    parts, margins, ok = [], {}, True
    for m in ALTERNATIVES:
        got = [rows[s][m] for s in seeds]
        if any(r is None for r in got):
            parts.append(f"{LABELS[m]}: missing on some seeds")
            ok = False
            continue
        alt = np.array([r.acc for r in got], float)
        diff = learned - alt
        sd = spread(diff)
        margins[m] = float(diff.mean())
        ok &= bool(diff.mean() > 0)
        beyond = ("" if np.isnan(sd) else
                  " (beyond the spread)" if abs(diff.mean()) > sd else " (within the spread)")
        parts.append(f"{LABELS[m]} {alt.mean():.2f}% (sd {spread(alt):.2f}): learned "
                     f"{diff.mean():+.2f}, sd {sd:.2f}{beyond}, per seed {each(diff)}")
    out.append(Verdict(claims[1], ok, f"{tag}, learned {learned.mean():.2f}%: "
                       + "; ".join(parts) + ".", {"margins": margins}))
    share = np.array([rows[s][LEARNED].speedup_b64 / rows[s][LEARNED].macs_ratio
                      for s in seeds], float)
    out.append(Verdict(claims[2], bool(np.nanmean(share) >= LATENCY_SHARE),
                       f"{tag}: share {np.nanmean(share):.2f} (per seed "
                       f"{', '.join(f'{v:.2f}' for v in share)}; BatchNorm folded, "
                       "channels-last, one thread).", {"share": float(np.nanmean(share))}))
    return out
