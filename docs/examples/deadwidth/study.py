"""The ``deadwidth`` study: do wider layers leave more neurons dead, and are dead neurons the
ones with small incoming weights? Tables, verdicts and the report section (pure functions of
stored numbers: editing this module redraws the report and never retrains).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from deadwidth.compute import DeadProfile, steps  # noqa: E402
from widthlab.metrics.variance import Verdict  # noqa: E402
from widthlab.studies.base import Figure, Section, Study, display_name  # noqa: E402
from widthlab.studies.tables import StudyTables, table, value  # noqa: E402


@dataclass(frozen=True)
class DeadTables(StudyTables):
    """One dataset's tables: a misspelt name or a missing column fails where they are built."""

    dead: pd.DataFrame = table("model", "width", "seed", "dead", "test_acc")
    runs: list = value("the sweep's run id")


def dead_table(store, run_id: str) -> pd.DataFrame:
    """One row per model: width, seed, dead neurons after the last epoch, test accuracy."""
    models = store.models(run_id).set_index("model")
    met = store.metrics(run_id)
    last = met[met.epoch == met.epoch.max()]
    dead = last[last.name == "dead"].set_index("model")["value"]
    acc = last[(last.name == "acc") & (last.split == "test")].set_index("model")["value"]
    return pd.DataFrame({"width": models.width, "seed": models.seed, "dead": dead,
                         "test_acc": acc}).reset_index()


def dead_grows(table: pd.DataFrame) -> Verdict:
    if table.dead.nunique() < 2:  # no rank correlation is defined: say so
        return Verdict("dead neurons grow with width", False,
                       f"every model has {table.dead.iloc[0]:.0f} dead neurons; the claim does "
                       "not hold on these runs.", {"rho": float("nan")})
    rho, p = stats.spearmanr(table.width, table.dead)
    holds = bool(rho > 0 and p < 0.05)
    return Verdict("dead neurons grow with width", holds,
                   f"Spearman rho(width, dead) = {rho:.2f} (p = {p:.2g}) over {len(table)} "
                   f"models; the claim {'holds' if holds else 'does not hold'}.",
                   {"rho": float(rho), "p": float(p)})


def draw(table: pd.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(table.width, table.dead, "o")
    ax.set(xscale="log", xlabel="width", ylabel="dead neurons", title=title)
    return fig


class DeadWidthStudy(Study):
    """Dead neurons against width, and the incoming-weight norms of every neuron."""

    name = "deadwidth"
    title = "Dead neurons and width"
    journal_sections = ("Variance of the activations",)
    journal_budget = "11 seeds per width, 15 to 30 epochs, all 60,000 training images"
    profiles = {"quick": DeadProfile(),
                "standard": DeadProfile(widths=(16, 64, 256), seeds=3, epochs=5),
                "full": DeadProfile(widths=(16, 64, 256, 1024), seeds=5, epochs=10,
                                    train_size=None)}

    def experiments(self, profile, dataset):
        return steps(profile)

    def tables(self, store, runs):
        return {d: DeadTables(dead=dead_table(store, r["sweep"]), runs=[r["sweep"]])
                for d, r in runs.items() if "sweep" in r}

    def verdicts(self, tables):
        return {d: [dead_grows(t.dead)] for d, t in tables.items()}

    def sections(self, tables, verdicts):
        return [Section(title=f"Dead neurons: {display_name(d)}", verdicts=verdicts[d],
                        figures=[Figure(f"{d}-dead", "dead neurons per width",
                                        lambda t=t, d=d: draw(t.dead, display_name(d)))],
                        tables=[("per model", t.dead)], run_ids=t.runs)
                for d, t in tables.items()]

    def summary(self, tables):
        return {f"deadwidth-{d}": t.dead for d, t in tables.items()}


STUDY = DeadWidthStudy()
