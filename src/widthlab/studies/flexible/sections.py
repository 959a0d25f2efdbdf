"""The flexible-layer study's report sections: one per experiment, each with both datasets'
figures (drawn lazily), tables and verdicts, beside the journal's own conclusion.

Example::

    from widthlab.studies.flexible import STUDY

    tables = STUDY.tables(store, {"mnist": runs.runs})
    for section in STUDY.sections(tables, STUDY.verdicts(tables)):
        print(section.title, len(section.figures))
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from widthlab.studies.base import Figure, Section, Tables, Verdicts, display_name, ordered_datasets
from widthlab.studies.flexible import analysis as an
from widthlab.studies.flexible import figures as ff
from widthlab.studies.flexible.config import ARMS, RUNS

JOURNAL = ("A sigmoid cut-off learns the width; the size plateaus because of L2 (after an "
           "erratum: the size does not converge to one value but grows and gets stuck in local "
           "minima); neither a random slope, random activation nor pretraining gets rid of them.")
#: the journal's own conclusion on each experiment, shown beside its verdicts
JOURNAL_BY_EXPERIMENT = {
    "convergence": "Whatever the starting size, the network converges (roughly) to the same "
                   "number of neurons and the same accuracy. Erratum: the starting size was "
                   "ignored; in fact the size does not converge to one value, it grows and gets "
                   "stuck in a local minimum, with no correlation (maybe an anti-correlation) "
                   "between the starting size and the final accuracy.",
    "frontier": "The size converges to a plateau; on MNIST the flexible network is as good as "
                "a static one, not on FashionMNIST; MNIST converges to a larger size than "
                "FashionMNIST. The plateau comes from L2: the output weights of disabled "
                "neurons are zero (without L2 they stay as noisy as at initialisation); "
                "without L2 the size is about 2x bigger and flexible networks are extremely "
                "competitive with static ones.",
    "minima": "The size does not converge but diverges in a logarithmic fashion. A random "
              "slope is not a better idea: a noisier gradient, slower growth and always a "
              "higher loss. Random activation: the gradient is always zero, completely "
              "unusable.",
    "pretrained": "The more the network is trained before enabling the variable size, the "
                  "lower the size it converges to; the networks end at the same loss on "
                  "average, so two-phase training will not help.",
    "size-only": "Planned, never run: with frozen, thoroughly trained weights the size "
                 "gradient should show whether gray-zone neurons push the size down (a "
                 "positive gradient).",
}
#: the journal's training budget of each experiment (all 60,000 training images, N = 500)
JOURNAL_BUDGET_BY_EXPERIMENT = {
    "convergence": "N = 500, starts every 25 neurons, 15 epochs, all 60,000 training images",
    "frontier": "N = 500, penalties 10^-2.5..10^-7.5, 7 replicates, 15 epochs, all 60,000 "
                "training images",
    "minima": "N = 500, 30 models per slope kind, 30 epochs, all 60,000 training images",
    "pretrained": "N = 500, 30 models per level, pretraining 0/5/10 epochs then 30 flexible "
                  "epochs, all 60,000 training images",
    "size-only": "planned, never run",
}
SECTION_TITLES = {
    "convergence": ("Flexible layers: convergence from any starting size",
                    "A sigmoid cut-off sigmoid(k (x0 - i)) over N neurons learns the width x0 "
                    "(lr 1, k = 1). Starting x0 from 0 to N, with L2 and a size penalty, and with "
                    "neither (the journal's setting after its erratum)."),
    "frontier": ("Flexible layers: penalty frontier and the plateau",
                 "A size-penalty sweep, growing from x0 = 0, with and without L2: converged "
                 "width, flexible accuracy, a static network of the converged width trained the "
                 "same way, and the best (full-width) static network; medians over replicates. "
                 "The plateau explanation plots the output weights of each hidden neuron "
                 "against the scaler."),
    "minima": ("Flexible layers: local minima, random slope and random activation",
               "No penalty, no L2, growing from x0 = 0: a fixed slope (gray zone about 10) "
               "against a gray-zone width drawn uniformly in [1, 20] at every step. The "
               "journal's random activation (Bernoulli keep with probability s) is probed "
               "each epoch for its size gradient."),
    "pretrained": ("Flexible layers: pretrained networks",
                   "Static training for several epochs, then x0 reset to 0 and flexible "
                   "training (no penalty, no L2)."),
    "size-only": ("Flexible layers: training only the size",
                  "The minima experiment's networks with their weights frozen (lr 0): only x0 "
                  "trains, from where it ended."),
}

Parts = tuple[list[Figure], list[tuple[str, pd.DataFrame]]]


def _convergence(dataset: str, name: str, t: dict) -> Parts:
    conv = t["convergence"]
    return ([Figure(f"{dataset}-convergence",
                    f"{name}: final width and test accuracy versus the starting x0",
                    partial(ff.convergence, conv, name))],
            [(f"{name}: per model", conv)])


def _frontier(dataset: str, name: str, t: dict) -> Parts:
    summ, best = t["frontier_summary"], t["best_static"]
    figs = [Figure(f"{dataset}-frontier-{arm}",
                   f"{name}: converged width and accuracies versus the size penalty "
                   f"({'with' if arm == 'l2' else 'without'} L2)",
                   partial(ff.frontier, summ[summ.arm == arm], best[best.arm == arm], name, arm))
            for arm in ARMS if arm in set(summ.arm)]
    figs.append(Figure(f"{dataset}-plateau",
                       f"{name}: sum of |output weights| per hidden neuron against the scaler, "
                       "smallest penalty, with and without L2",
                       partial(ff.plateau, t["plateau"], name)))
    frames = [(f"{name}: medians per arm and penalty", summ)]
    if len(best):
        frames.append((f"{name}: full-width static networks (medians)", best))
    return figs, frames


def _minima(dataset: str, name: str, t: dict) -> Parts:
    e = t["minima"]
    return ([Figure(f"{dataset}-minima",
                    f"{name}: width, size-gradient direction and batch loss per epoch",
                    partial(ff.minima, e, name))],
            [(f"{name}: last epoch per slope", an.last_epoch_summary(e, "slope"))])


def _pretrained(dataset: str, name: str, t: dict) -> Parts:
    e = t["pretrained"]
    return ([Figure(f"{dataset}-pretrained",
                    f"{name}: width and batch loss per epoch after static pretraining",
                    partial(ff.pretrained, e, name))],
            [(f"{name}: last epoch per pretraining level", an.last_epoch_summary(e, "pretrain"))])


def _size_only(dataset: str, name: str, t: dict) -> Parts:
    e = t["size_only"]
    return ([Figure(f"{dataset}-size-only",
                    f"{name}: x0 change and size gradient with frozen weights",
                    partial(ff.size_only, e, t["size_only_start"], name))],
            [(f"{name}: last epoch per slope", an.last_epoch_summary(e, "slope"))])


PARTS = {"convergence": _convergence, "frontier": _frontier, "minima": _minima,
         "pretrained": _pretrained, "size-only": _size_only}


def section_runs(experiment: str, t: dict) -> list[str]:
    """The runs an experiment's section was drawn from on one dataset (helper runs too)."""
    ids = [t["runs"][experiment]]
    if experiment == "frontier" and t.get("static"):
        ids.append(t["static"])
    if experiment == "pretrained":
        ids = t["chain"] + ids
    return ids


def sections(tables: Tables, verdicts: Verdicts) -> list[Section]:
    """One section per experiment stored on any dataset, in :data:`RUNS` order."""
    out = []
    datasets = ordered_datasets(list(tables))
    for exp in RUNS:
        having = [d for d in datasets if exp in tables[d]["runs"]]
        if not having:
            continue
        figs, frames, run_ids = [], [], []
        for d in having:
            f, fr = PARTS[exp](d, display_name(d), tables[d])
            figs += f
            frames += fr
            run_ids += section_runs(exp, tables[d])
        title, intro = SECTION_TITLES[exp]
        out.append(Section(title=title, intro=intro, verdicts=list(verdicts.get(exp, [])),
                           journal=JOURNAL_BY_EXPERIMENT[exp], figures=figs, tables=frames,
                           run_ids=run_ids,
                           journal_budget=JOURNAL_BUDGET_BY_EXPERIMENT[exp]))
    return out
