"""Orderings and their stability, against naive O(n^2) loops and scipy.stats."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from widthlab.errors import UsageError
from widthlab.metrics.ordering import (
    count_inversions,
    discordant_pairs,
    displacement,
    kendall_tau,
    ordering,
    ranks,
    spearman,
    stability,
    stability_series,
    top_k,
    top_k_overlap,
)

# small integers give many ties, which is where the tie rules matter
tied = st.lists(st.integers(-3, 3), min_size=2, max_size=40)


def naive_inversions(v):
    v = list(v)
    return sum(v[i] > v[j] for i in range(len(v)) for j in range(i + 1, len(v)))


def naive_discordant(a, b):
    n = len(a)
    return sum((a[i] - a[j]) * (b[i] - b[j]) < 0 for i in range(n) for j in range(i + 1, n))


@given(tied)
def test_merge_sort_counts_inversions_like_the_naive_loop(v):
    assert count_inversions(v) == naive_inversions(v)


@given(st.data())
def test_discordant_pairs_match_the_naive_count(data):
    a = data.draw(tied)
    b = data.draw(st.lists(st.integers(-3, 3), min_size=len(a), max_size=len(a)))
    assert discordant_pairs(a, b) == naive_discordant(a, b)


def test_discordant_pairs_on_a_large_random_pair_match_a_vectorised_count():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3000), rng.normal(size=3000)
    b[:1000] = a[:1000]  # some structure
    expected = 0
    for i in range(0, 3000, 500):  # (a_i - a_j)(b_i - b_j) < 0 over all pairs, in blocks
        da = a[i:i + 500, None] - a[None]
        db = b[i:i + 500, None] - b[None]
        expected += int(((da * db) < 0).sum())
    assert discordant_pairs(a, b) == expected // 2


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@given(st.data())
def test_kendall_tau_b_and_spearman_equal_scipy(data):
    a = data.draw(tied)
    b = data.draw(st.lists(st.integers(-3, 3), min_size=len(a), max_size=len(a)))
    ref_tau = stats.kendalltau(a, b).statistic
    ref_rho = stats.spearmanr(a, b).statistic
    tau, rho = kendall_tau(a, b), spearman(a, b)
    if np.isnan(ref_tau):
        assert math.isnan(tau)
    else:
        assert tau == pytest.approx(ref_tau, abs=1e-12)
    if np.isnan(ref_rho):
        assert math.isnan(rho)
    else:
        assert rho == pytest.approx(ref_rho, abs=1e-12)


def test_kendall_tau_of_continuous_scores_equals_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=500)
    b = a + rng.normal(size=500)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert kendall_tau(a, a) == 1.0 and kendall_tau(a, -a) == -1.0
    assert math.isnan(kendall_tau(a, np.ones(500)))


def test_ordering_is_descending_with_ties_by_index():
    s = [0.5, 2.0, 0.5, 3.0, 2.0]
    assert ordering(s).tolist() == [3, 1, 4, 0, 2]
    assert ranks(s).tolist() == [3, 1, 4, 0, 2]
    assert top_k(s, 2).tolist() == [3, 1]


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=30), st.data())
def test_top_k_overlap_is_the_share_of_common_members(s, data):
    t = data.draw(st.lists(st.floats(-5, 5), min_size=len(s), max_size=len(s)))
    k = data.draw(st.integers(1, len(s)))
    ref = len(set(np.argsort(-np.array(s), kind="stable")[:k])
              & set(np.argsort(-np.array(t), kind="stable")[:k])) / k
    assert top_k_overlap(s, t, k) == ref


def test_stability_of_known_moves():
    base = np.arange(10, 0, -1).astype(float)  # neuron 0 most important
    # one adjacent swap: neurons 4 and 5 trade places
    moved = base.copy()
    moved[[4, 5]] = moved[[5, 4]]
    s = stability(base, moved, k=5)
    assert s["swaps"] == 1 and s["max_displacement"] == 1
    assert s["mean_displacement"] == pytest.approx(0.2)
    assert s["kendall_tau"] == pytest.approx(1 - 2 / 45)
    assert s["topk_churn"] == pytest.approx(1 / 5)  # neuron 4 left the top 5, 5 came in
    # full reversal: every pair swapped
    s = stability(base, -base)
    assert s["swaps"] == 45 and s["kendall_tau"] == -1.0 and s["max_displacement"] == 9
    assert s["k"] == 2 and s["topk_churn"] == 1.0
    same = stability(base, 2 * base)
    assert same["swaps"] == 0 and same["kendall_tau"] == 1.0 and same["topk_churn"] == 0.0


@given(st.permutations(list(range(12))), st.permutations(list(range(12))))
def test_stability_of_permutations_matches_scipy_and_naive_loops(p, q):
    a, b = -np.array(p, float), -np.array(q, float)  # rank i has score -i
    s = stability(a, b, k=4)
    assert s["kendall_tau"] == pytest.approx(stats.kendalltau(p, q).statistic, abs=1e-12)
    assert s["swaps"] == naive_discordant(p, q)
    d = np.abs(np.array(p) - np.array(q))
    assert s["mean_displacement"] == pytest.approx(d.mean())
    assert s["max_displacement"] == d.max()
    assert np.array_equal(displacement(a, b), d)


def test_stability_series_compares_consecutive_records():
    rng = np.random.default_rng(2)
    recs = rng.normal(size=(4, 30))
    t = stability_series(recs, steps=[1, 2, 5, 6])
    assert t["step"].tolist() == [2, 5, 6] and t["from_step"].tolist() == [1, 2, 5]
    for row, i in zip(t.itertuples(), range(1, 4), strict=True):
        assert row.swaps == naive_discordant(ranks(recs[i - 1]), ranks(recs[i]))
        assert row.kendall_tau == pytest.approx(stats.kendalltau(recs[i - 1], recs[i])[0])


def test_errors_name_the_problem():
    with pytest.raises(UsageError, match="same layer"):
        stability([1, 2, 3], [1, 2])
    with pytest.raises(UsageError, match="finite"):
        kendall_tau([1, np.nan], [1, 2])
    with pytest.raises(UsageError, match=r"k must be an integer in \[1, 3\]"):
        top_k_overlap([1, 2, 3], [3, 2, 1], 4)
    with pytest.raises(UsageError, match="1-D"):
        ordering(np.zeros((2, 2)))
    with pytest.raises(UsageError, match="one step per record"):
        stability_series(np.zeros((3, 4)), steps=[1, 2])
