"""The variance study's statistics against scipy/numpy computed directly in each test."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from widthlab.errors import UsageError
from widthlab.metrics import (
    SHAPIRO_MAX_N,
    Verdict,
    accuracy_plateau,
    dead_grows_with_width,
    log_fit,
    mean_ci,
    most_normal_width,
    plateau_shift,
    shapiro,
    shapiro_argmax_vs_plateau,
    spearman_trend,
    total_std_grows_logarithmically,
    width_summary,
)

WIDTHS = [8, 16, 32, 64]
SEEDS = 3


def _t_interval(v):
    """95 % t-interval written out by hand: (mean, lo, hi)."""
    v = np.asarray(v, dtype=float)
    n = len(v)
    m = sum(v) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    h = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return m, m - h, m + h


@pytest.fixture(scope="module")
def sweep():
    """Gamma-distributed stds with a few exact zeros, 3 seeds per width, and accuracies."""
    rng = np.random.default_rng(1234)
    stds, acc = {}, {}
    for w in WIDTHS:
        reps = []
        for _ in range(SEEDS):
            a = rng.gamma(2.0 + w / 16, 0.3, size=w)
            a[rng.random(w) < 0.1] = 0.0
            reps.append(a)
        stds[w] = reps
        acc[w] = list(0.9 + 0.02 * np.log2(w / 8) + rng.normal(0, 0.003, SEEDS))
    return stds, acc


# --------------------------------------------------------------------------------------------
# width_summary
# --------------------------------------------------------------------------------------------


def test_summary_matches_direct_computation(sweep):
    stds, acc = sweep
    out = width_summary(stds, accuracy={"test": acc})
    assert out["width"].tolist() == WIDTHS
    assert out["replicates"].tolist() == [SEEDS] * len(WIDTHS)
    for _, row in out.iterrows():
        w = int(row["width"])
        pooled = np.concatenate(stds[w])
        ref = sps.shapiro(pooled)
        assert row["shapiro_w"] == pytest.approx(ref.statistic, rel=1e-12)
        assert row["shapiro_p"] == pytest.approx(ref.pvalue, rel=1e-9)
        assert row["std_mean"] == pytest.approx(pooled.mean(), rel=1e-12)
        assert row["std_median"] == pytest.approx(np.median(pooled), rel=1e-12)

        m, lo, hi = _t_interval([a.sum() for a in stds[w]])
        assert (row["total_std"], row["total_std_lo"], row["total_std_hi"]) == pytest.approx(
            (m, lo, hi), rel=1e-12)
        m, lo, hi = _t_interval([sps.shapiro(a).statistic for a in stds[w]])
        assert (row["shapiro_w_rep"], row["shapiro_w_rep_lo"],
                row["shapiro_w_rep_hi"]) == pytest.approx((m, lo, hi), rel=1e-12)
        counts = [int((a == 0).sum()) for a in stds[w]]
        if len(set(counts)) > 1:
            m, lo, hi = _t_interval(counts)
            assert (row["dead"], row["dead_lo"], row["dead_hi"]) == pytest.approx((m, lo, hi))
        else:  # zero spread: a degenerate interval at the mean
            assert row["dead"] == row["dead_lo"] == row["dead_hi"] == counts[0]
        assert row["dead_frac"] == pytest.approx(np.mean(counts) / w)
        m, lo, hi = _t_interval(acc[w])
        assert (row["test_acc"], row["test_acc_lo"], row["test_acc_hi"]) == pytest.approx(
            (m, lo, hi), rel=1e-12)
        assert lo < m < hi


def test_mean_ci_by_hand_and_edge_cases():
    v = [0.91, 0.93, 0.9, 0.95]
    assert mean_ci(v) == pytest.approx(_t_interval(v), rel=1e-14)
    m, lo, hi = mean_ci(v, level=0.9)
    h = sps.t.ppf(0.95, 3) * np.std(v, ddof=1) / 2
    assert (lo, hi) == pytest.approx((m - h, m + h))
    m, lo, hi = mean_ci([0.5])
    assert m == 0.5 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in mean_ci([]))
    assert mean_ci([1.0, np.nan, 3.0]) == pytest.approx(_t_interval([1.0, 3.0]))
    with pytest.raises(UsageError, match="level"):
        mean_ci(v, level=95)


def test_large_pool_is_subsampled_deterministically_without_warning():
    rng = np.random.default_rng(7)
    reps = [rng.gamma(3.0, 1.0, size=4096) for _ in range(2)]  # 8192 pooled values
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = width_summary({4096: reps})
        w, p = shapiro(np.concatenate(reps))
    pooled = np.sort(np.concatenate(reps))
    idx = [round(i * (pooled.size - 1) / (SHAPIRO_MAX_N - 1)) for i in range(SHAPIRO_MAX_N)]
    ref = sps.shapiro(pooled[idx])
    assert (w, p) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    assert out.loc[0, "shapiro_w"] == pytest.approx(ref.statistic, rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = sps.shapiro(pooled).statistic
    assert abs(w - full) < 2e-3  # the evenly spaced order statistics keep the shape
    # 5000 values exactly: untouched
    x = rng.normal(size=SHAPIRO_MAX_N)
    assert shapiro(x) == pytest.approx(tuple(sps.shapiro(x)), rel=1e-12)


def test_shapiro_undefined_cases_are_nan():
    assert all(math.isnan(v) for v in shapiro([1.0, 2.0]))
    assert all(math.isnan(v) for v in shapiro(np.zeros(50)))  # scipy would say W = 1
    with pytest.raises(UsageError, match="NaN"):
        shapiro([1.0, np.nan, 2.0, 3.0])


def test_failed_replicates_are_skipped(sweep):
    stds, acc = sweep
    a, b, c = stds[16]
    bad = b.copy()
    bad[3] = np.nan
    out = width_summary({16: [a, None, bad, c], 32: [stds[32][0]], 64: [None, None]},
                        accuracy={"test": {16: [0.9, None, np.nan, 0.92], 32: [0.95]}})
    row = out.set_index("width")
    assert row["replicates"].tolist() == [2, 1, 0]
    assert row.loc[16, "total_std"] == pytest.approx((a.sum() + c.sum()) / 2)
    assert row.loc[16, "shapiro_w"] == pytest.approx(sps.shapiro(np.r_[a, c]).statistic)
    assert row.loc[16, "test_acc"] == pytest.approx(0.91)
    # one replicate: a mean but no interval
    assert row.loc[32, "total_std"] == pytest.approx(stds[32][0].sum())
    assert math.isnan(row.loc[32, "total_std_lo"]) and math.isnan(row.loc[32, "test_acc_hi"])
    # nothing usable: the row stays, all NaN; a width absent from a split gets NaN accuracy
    assert row.loc[64, ["shapiro_w", "std_mean", "total_std", "dead", "dead_frac",
                        "test_acc"]].isna().all()


def test_dead_masks_replace_the_zero_rule():
    stds = {4: [np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0, 3.0])],
            8: [np.arange(8.0) + 1, np.arange(8.0) + 2]}
    masks = {4: [np.array([True, True, False, False]), np.array([1, 0, 0, 0])],
             8: [np.zeros(8, bool), None]}
    out = width_summary(stds, dead=masks).set_index("width")
    assert out.loc[4, "dead"] == 1.5 and out.loc[4, "dead_frac"] == pytest.approx(1.5 / 4)
    assert out.loc[4, "dead_lo"] == pytest.approx(_t_interval([2, 1])[1])
    assert out.loc[8, "replicates"] == 1  # a None mask marks the replicate as failed
    assert out.loc[8, "dead"] == 0
    plain = width_summary(stds).set_index("width")  # no masks: std == 0 is dead
    assert plain.loc[4, "dead"] == 0.5 and plain.loc[8, "replicates"] == 2


@pytest.mark.parametrize("kwargs, match", [
    (dict(stds={}), "non-empty dict"),
    (dict(stds={0: [np.ones(3)]}), "positive integers"),
    (dict(stds={"64": [np.ones(3)]}), "positive integers"),
    (dict(stds={4: np.ones((2, 4))}), "one entry per replicate"),
    (dict(stds={4: [np.ones((2, 2))]}), "1-D array"),
    (dict(stds={4: [np.array([1.0, -0.5, 2.0])]}), "cannot be negative"),
    (dict(stds={4: [np.ones(4)]}, dead={8: [np.zeros(4, bool)]}), "exactly the widths"),
    (dict(stds={4: [np.ones(4)]}, dead={4: []}), "one mask per replicate"),
    (dict(stds={4: [np.ones(4)]}, dead={4: [np.zeros(3, bool)]}), "same model"),
    (dict(stds={4: [np.ones(4)]}, dead={4: [np.array([0, 2, 0, 0])]}), "boolean"),
    (dict(stds={4: [np.ones(4)]}, accuracy={"test": {8: [0.9]}}), "no activation stds"),
    (dict(stds={4: [np.ones(4)]}, accuracy={"": {4: [0.9]}}), "split names"),
    (dict(stds={4: [np.ones(4)]}, accuracy={"test": {4: ["high"]}}), "must hold numbers"),
])
def test_summary_errors_are_helpful(kwargs, match):
    with pytest.raises(UsageError, match=match):
        width_summary(**kwargs)


# --------------------------------------------------------------------------------------------
# log_fit, spearman_trend
# --------------------------------------------------------------------------------------------


def test_log_fit_matches_polyfit_and_r2_by_hand():
    rng = np.random.default_rng(3)
    x = np.array([8, 16, 32, 64, 128, 256, 512], float)
    y = 2.0 + 1.5 * np.log(x) + rng.normal(0, 0.4, x.size)
    fit = log_fit(x, y)
    b, a = np.polyfit(np.log(x), y, 1)
    assert (fit["a"], fit["b"]) == pytest.approx((a, b), rel=1e-10)
    ss_res = ((y - (a + b * np.log(x))) ** 2).sum()
    ss_tot = ((y - y.mean()) ** 2).sum()
    assert fit["r2"] == pytest.approx(1 - ss_res / ss_tot, rel=1e-10)
    assert fit["r2"] == pytest.approx(sps.linregress(np.log(x), y).rvalue ** 2, rel=1e-10)
    assert fit["n"] == 7
    # NaN pairs are dropped
    again = log_fit(np.r_[x, 1024.0, np.nan], np.r_[y, np.nan, 3.0])
    assert again == pytest.approx(fit)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.5, 1e4), min_size=3, max_size=12, unique=True),
       st.floats(-100, 100), st.floats(-10, 10))
def test_log_fit_recovers_exact_logarithms(xs, a, b):
    lx = np.log(xs)
    assume(np.ptp(lx) > 1e-3)
    fit = log_fit(xs, a + b * lx)
    assert fit["n"] == len(xs)
    assert fit["b"] == pytest.approx(b, abs=1e-8 * (1 + abs(a) + abs(b)) / np.ptp(lx))
    assert fit["a"] == pytest.approx(a, abs=1e-7 * (1 + abs(a) + abs(b)) / np.ptp(lx))
    if abs(b) * np.ptp(lx) > 1e-3:
        assert fit["r2"] == pytest.approx(1.0, abs=1e-9)


def test_log_fit_constant_y_has_undefined_r2():
    fit = log_fit([1, 2, 4], [3.0, 3.0, 3.0])
    assert fit["b"] == pytest.approx(0, abs=1e-12) and math.isnan(fit["r2"])


@pytest.mark.parametrize("x, y, match", [
    ([1, 2], [1, 2], "at least 3"),
    ([1, 2, np.nan], [1, 2, 3], "at least 3"),
    ([1, 0, 2], [1, 2, 3], "x must be > 0"),
    ([1, -2, 2], [1, 2, 3], "x must be > 0"),
    ([4, 4, 4], [1, 2, 3], "all x values are equal"),
    ([1, 2, 3], [1, 2], "one y per x"),
    ([1, 2, np.inf], [1, 2, 3], "finite"),
])
def test_log_fit_errors(x, y, match):
    with pytest.raises(UsageError, match=match):
        log_fit(x, y)


def test_spearman_matches_scipy():
    rng = np.random.default_rng(5)
    x = np.array([8, 16, 32, 64, 128, 256])
    y = x * 0.1 + rng.normal(0, 5, x.size)
    ref = sps.spearmanr(x, y)
    out = spearman_trend(x, y)
    assert (out["rho"], out["p"], out["n"]) == pytest.approx((ref.statistic, ref.pvalue, 6))
    out = spearman_trend(np.r_[x, 512], np.r_[y, np.nan])
    assert out["n"] == 6 and out["rho"] == pytest.approx(ref.statistic)
    flat = spearman_trend(x, np.ones(6))
    assert math.isnan(flat["rho"]) and math.isnan(flat["p"])
    with pytest.raises(UsageError, match="at least 3"):
        spearman_trend([1, 2], [2, 1])


# --------------------------------------------------------------------------------------------
# most_normal_width, accuracy_plateau
# --------------------------------------------------------------------------------------------


def test_most_normal_width_and_neighbours():
    s = pd.DataFrame({"width": [64, 8, 32, 16, 128],
                      "shapiro_w": [0.90, 0.80, 0.97, np.nan, 0.95]})
    assert most_normal_width(s) == {"width": 32, "w": 0.97, "lower": 16, "upper": 64}
    s.loc[1, "shapiro_w"] = 0.99  # width 8: the first one
    assert most_normal_width(s) == {"width": 8, "w": 0.99, "lower": None, "upper": 16}
    s.loc[4, "shapiro_w"] = 0.999  # width 128: the last one
    assert most_normal_width(s) == {"width": 128, "w": 0.999, "lower": 64, "upper": None}
    with pytest.raises(UsageError, match="every shapiro_w is NaN"):
        most_normal_width(s.assign(shapiro_w=np.nan))
    with pytest.raises(UsageError, match="lacks column"):
        most_normal_width(s.drop(columns="shapiro_w"))
    with pytest.raises(UsageError, match="DataFrame"):
        most_normal_width({"width": [1]})


def test_accuracy_plateau_examples():
    w = [256, 8, 16, 32, 64, 128]
    acc = [0.980, 0.90, 0.95, 0.970, 0.976, 0.981]
    assert accuracy_plateau(w, acc) == 64  # 0.981 - 0.976 = 0.005: within tol
    assert accuracy_plateau(w, acc, tol=0.004) == 128
    assert accuracy_plateau(w, acc, tol=0.0) == 128
    assert accuracy_plateau(w, acc, tol=0.1) == 8
    assert accuracy_plateau(w, [0.98, 0.9, np.nan, 0.979, np.nan, np.nan]) == 32


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4096), st.floats(0, 1)), min_size=1, max_size=10,
                unique_by=lambda t: t[0]),
       st.floats(0, 0.2))
def test_accuracy_plateau_is_the_smallest_width_near_the_best(pairs, tol):
    widths, acc = zip(*pairs, strict=True)
    got = accuracy_plateau(list(widths), list(acc), tol)
    best = max(acc)
    by_width = dict(pairs)
    assert best - by_width[got] <= tol + 1e-12
    assert all(best - a > tol + 1e-12 for w, a in pairs if w < got)


@pytest.mark.parametrize("widths, acc, tol, match", [
    ([8, 16], [0.9], 0.005, "one accuracy per width"),
    ([8, 8], [0.9, 0.91], 0.005, "repeat"),
    ([8, 0], [0.9, 0.91], 0.005, "positive integers"),
    ([8, 16.5], [0.9, 0.91], 0.005, "positive integers"),
    ([8, 16], [np.nan, np.nan], 0.005, "every accuracy is NaN"),
    ([8, 16], [0.9, 0.91], -0.1, "tol must be"),
    ([8, 16], [0.9, 0.91], float("nan"), "tol must be"),
])
def test_accuracy_plateau_errors(widths, acc, tol, match):
    with pytest.raises(UsageError, match=match):
        accuracy_plateau(widths, acc, tol)


# --------------------------------------------------------------------------------------------
# verdicts, end to end through width_summary
# --------------------------------------------------------------------------------------------

SWEEP = [8, 16, 32, 64, 128, 256, 512]


def _stds_with(total, dead_count, seeds=3, seed=0):
    """Stds per width whose sums are ``total(w)`` (+ a little noise) and with ``dead_count(w)``
    exact zeros."""
    rng = np.random.default_rng(seed)
    out = {}
    for w in SWEEP:
        reps = []
        for _ in range(seeds):
            a = rng.gamma(4.0, 1.0, size=w)
            a[: dead_count(w)] = 0.0
            a *= (total(w) + rng.normal(0, 0.01)) / a.sum()
            reps.append(a)
        out[w] = reps
    return out


def test_dead_grows_with_width_verdicts():
    grows = width_summary(_stds_with(lambda w: 10.0, lambda w: w // 8))
    v = dead_grows_with_width(grows)
    ref = sps.spearmanr(SWEEP, [w // 8 for w in SWEEP])
    assert isinstance(v, Verdict) and v.holds is True
    assert v.numbers["rho"] == pytest.approx(ref.statistic)
    assert v.numbers["p"] == pytest.approx(ref.pvalue)
    assert v.text.startswith("dead neurons grow with width (Spearman rho = 1.00, p = ")
    assert str(v) == v.text

    shrinks = width_summary(_stds_with(lambda w: 10.0, lambda w: 8 - int(np.log2(w)) + 2))
    v = dead_grows_with_width(shrinks)
    assert v.holds is False and v.numbers["rho"] < 0 and "does not hold" in v.text

    noisy_counts = dict(zip(SWEEP, [1, 3, 2, 5, 6, 8, 7], strict=True))
    noisy = width_summary(_stds_with(lambda w: 10.0, noisy_counts.get))
    v = dead_grows_with_width(noisy)
    assert v.holds is True and v.numbers["n"] == 7
    assert v.text == "dead neurons grow with width (Spearman rho = 0.93, p = 0.0025)"
    strict = dead_grows_with_width(noisy, alpha=1e-3)  # p must beat alpha
    assert strict.holds is False and "needs rho > 0 and p < 0.001" in strict.text

    none_dead = dead_grows_with_width(width_summary(_stds_with(lambda w: 10.0, lambda w: 0)))
    assert none_dead.holds is False and "undefined" in none_dead.text
    with pytest.raises(UsageError, match="alpha"):
        dead_grows_with_width(grows, alpha=5)


def test_total_std_grows_logarithmically_verdicts():
    logs = width_summary(_stds_with(lambda w: 3.0 + 2.0 * np.log(w), lambda w: 0))
    v = total_std_grows_logarithmically(logs)
    assert v.holds is True
    b, a = np.polyfit(np.log(SWEEP), logs["total_std"], 1)
    assert (v.numbers["a"], v.numbers["b"]) == pytest.approx((a, b))
    assert v.numbers["b"] == pytest.approx(2.0, abs=0.01) and v.numbers["r2"] > 0.999
    assert "R^2 = 1.000" in v.text and "does not hold" not in v.text

    rng = np.random.default_rng(11)
    noise = dict(zip(SWEEP, rng.normal(0, 40, len(SWEEP)), strict=True))
    linear = width_summary(_stds_with(lambda w: 50 + 0.5 * w + noise[w], lambda w: 0))
    v = total_std_grows_logarithmically(linear)
    assert v.holds is False and v.numbers["b"] > 0 and v.numbers["r2"] < 0.9
    assert "does not hold" in v.text

    falling = width_summary(_stds_with(lambda w: 30.0 - 2.0 * np.log(w), lambda w: 0))
    v = total_std_grows_logarithmically(falling)
    assert v.holds is False and v.numbers["b"] < 0 and v.numbers["r2"] > 0.99
    assert total_std_grows_logarithmically(logs, min_r2=1.0).holds is False


def _summary(shapiro_w, test_acc):
    return pd.DataFrame({"width": SWEEP[: len(shapiro_w)], "shapiro_w": shapiro_w,
                         "test_acc": test_acc})


@pytest.mark.parametrize("w_peak, relation", [(1, "below"), (3, "at"), (5, "above")])
def test_shapiro_argmax_vs_plateau(w_peak, relation):
    ws = [0.9] * 7
    ws[w_peak] = 0.99
    acc = [0.90, 0.95, 0.97, 0.980, 0.981, 0.982, 0.981]  # plateau at 64
    v = shapiro_argmax_vs_plateau(_summary(ws, acc))
    assert v.holds is True and v.numbers["relation"] == relation
    assert v.numbers["argmax_width"] == SWEEP[w_peak] and v.numbers["plateau_width"] == 64
    assert f"({SWEEP[w_peak]}, W = 0.9900) is {relation} the test accuracy plateau (64" in v.text
    with pytest.raises(UsageError, match=r"lacks column.*\['val_acc'\].*splits present"):
        shapiro_argmax_vs_plateau(_summary(ws, acc), split="val")


def test_plateau_shift_from_real_summaries():
    rng = np.random.default_rng(2)
    stds = {w: [rng.gamma(2.0, 1.0, w) for _ in range(2)] for w in SWEEP}
    mnist = width_summary(stds, accuracy={"test": {
        w: [min(0.98, 0.9 + 0.04 * np.log2(w / 8))] * 2 for w in SWEEP}})  # plateau at 32
    fashion = width_summary(stds, accuracy={"test": {
        w: [min(0.90, 0.7 + 0.04 * np.log2(w / 8))] * 2 for w in SWEEP}})  # plateau at 256
    v = plateau_shift(mnist, fashion, "MNIST", "FashionMNIST")
    assert v.holds is True
    assert (v.numbers["plateau_a"], v.numbers["plateau_b"]) == (32, 256)
    assert v.text == ("FashionMNIST plateaus at a larger width than MNIST "
                      "(test accuracy plateau 256 vs 32, tol 0.005)")
    back = plateau_shift(fashion, mnist, "FashionMNIST", "MNIST")
    assert back.holds is False and "MNIST does not plateau at a larger width" in back.text
    same = plateau_shift(mnist, mnist, "MNIST", "MNIST again")
    assert same.holds is False
    with pytest.raises(UsageError, match="plateau_shift\\(FashionMNIST\\).*lacks column"):
        plateau_shift(mnist, fashion.drop(columns="test_acc"), "MNIST", "FashionMNIST")


def test_accuracy_saturates_holds_only_on_saturating_data():
    from widthlab.metrics import accuracy_saturates

    widths = [16, 32, 64, 128, 256, 512]
    sat = pd.DataFrame({"width": widths, "test_acc": [0.90, 0.94, 0.96, 0.970, 0.971, 0.971]})
    v = accuracy_saturates(sat)
    assert v.holds and v.numbers["plateau_width"] == 128
    assert v.numbers["gain_low"] == pytest.approx(0.97 - 0.90)
    # still climbing, faster at the top: does not hold
    lin = pd.DataFrame({"width": widths, "test_acc": [0.80, 0.81, 0.83, 0.86, 0.90, 0.95]})
    v = accuracy_saturates(lin)
    assert not v.holds and "does not hold" in v.text
    with pytest.raises(UsageError, match="3 widths"):
        accuracy_saturates(sat.iloc[:2])


def test_first_crossing_interpolates_in_log_width():
    from widthlab.metrics import first_crossing

    w = [16, 32, 64, 128]
    assert first_crossing(w, [0.1, 0.2, 0.6, 0.9], 0.6) == pytest.approx(64)
    # halfway between 0.2 and 0.6 in value is halfway between 32 and 64 in log width
    assert first_crossing(w, [0.1, 0.2, 0.6, 0.9], 0.4) == pytest.approx(math.sqrt(32 * 64))
    assert first_crossing(w, [0.7, 0.8, 0.9, 1.0], 0.5) == 16
    assert first_crossing(w, [0.1, 0.2, 0.3, np.nan], 0.5) is None
    assert first_crossing(w[::-1], [0.9, 0.6, 0.2, 0.1], 0.6) == pytest.approx(64)  # unsorted
    with pytest.raises(UsageError, match="one value per width"):
        first_crossing(w, [0.1], 0.5)


def test_closest_turning_point_picks_the_smallest_octave_distance():
    from widthlab.metrics import closest_turning_point

    v = closest_turning_point({"a": 64.0, "b": 300.0, "c": None}, plateau=256)
    assert v.holds and v.numbers["best"] == "b"
    assert v.numbers["octaves"]["a"] == pytest.approx(2.0)
    assert "c: never" in v.text and "above" in v.text
    none = closest_turning_point({"a": None}, plateau=256)
    assert not none.holds and "no metric turns" in none.text
    with pytest.raises(UsageError, match="plateau"):
        closest_turning_point({"a": 1.0}, plateau=0)
