"""Every study's profiles: quick, standard and full, in that order of training work; the quick
budgets the report's verdicts were checked with (README: the quick reproduction's time); the
journal's budget each report section states."""

from __future__ import annotations

import pytest

from widthlab.nn.widths import sqrt2_widths
from widthlab.reproduce import jobs_for
from widthlab.studies import available, get_study
from widthlab.studies.base import Experiment

N_TRAIN = 55_000  # the built-in datasets' training split


def work(study, profile: str) -> float:
    """Training work of the study's own engine runs (derived runs left out): hidden units x
    epochs x training samples, summed."""
    steps = study.experiments(study.profile(profile), "mnist")
    return float(sum(sum(s.hidden[0] for s in step.specs) * step.config.epochs
                     * (step.config.train_size or N_TRAIN)
                     for step in steps if isinstance(step, Experiment)))


@pytest.mark.parametrize("study", available(), ids=lambda s: s.name)
def test_quick_standard_full_and_the_journals_budget(study):
    assert list(study.profiles) == ["quick", "standard", "full"]
    assert study.journal_budget  # shown beside every section's own budget
    quick, standard, full = (work(study, p) for p in study.profiles)
    if quick:  # studies that only analyse another's runs (PCA's sweep, the frontier) train none
        assert quick < standard < full


def test_quick_budgets():
    p = get_study("variance").profile("quick")
    assert (p.widths, p.seeds, p.epochs, p.train_size) == (tuple(sqrt2_widths(16, 1024)), 2, 2,
                                                           20_000)
    p = get_study("optimizer").profile("quick")
    assert (p.replicates, p.epochs, p.train_size, p.width) == (3, 15, 10_000, 64)
    p = get_study("growth").profile("quick")
    assert p.prices == (1e-4, 1e-3, 1e-2) and p.inits == ("gradmax", "none")
    assert get_study("importance").profile("quick").max_samples == 1500
    p = get_study("ordering").profile("quick")
    assert (p.epochs, p.max_samples) == (6, 1500)


def test_standard_trains_the_journals_epochs_where_the_verdicts_need_them():
    assert get_study("variance").profile("standard").epochs == 15  # the total std's log trend
    flex = get_study("flexible").profile("standard")
    assert (flex.epochs, flex.minima_epochs, flex.pretrain_epochs) == (15, 30, 30)
    assert flex.pretrain_levels == (0, 5, 10)
    assert get_study("sparsifier").profile("standard").epochs == 60
    assert get_study("optimizer").profile("standard").epochs > 30  # past where noise showed


def test_reproduce_takes_every_profile():
    for profile in ("quick", "standard", "full"):
        jobs = jobs_for(profile, ["mnist"])
        assert {j.profile for j in jobs} == {profile}
        assert [j.study for j in jobs] == [s.name for s in available()]
