"""The resnet study (issue 32): how wide should each block of a residual CNN be? Learned widths
of ResNet-20 (:mod:`widthlab.nn.resnet`) on MNIST and FashionMNIST, during training, against
what a practitioner would otherwise do at the same multiply-adds.

The steps are in :mod:`~widthlab.studies.resnet.compute`; the tables, verdicts and figures
read the store only.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from widthlab.store import Store
from widthlab.studies.base import (
    Figure,
    Section,
    Study,
    Tables,
    Verdicts,
    display_name,
    ordered_datasets,
)
from widthlab.studies.resnet import analysis as an
from widthlab.studies.resnet import figures as fg
from widthlab.studies.resnet import verdicts as vd
from widthlab.studies.resnet.compute import steps
from widthlab.studies.resnet.config import NAME, PROFILES, ResnetProfile

INTRO = ("ResNet-20 (He et al.'s CIFAR ResNet, option-B shortcuts, 16/32/64 channels; 272,186 "
         "parameters, 31.0M multiply-adds per 28x28 image) trained with SGD momentum and a "
         "cosine schedule. Learned widths: a gate on every units-core group (the profile's "
         "gate_kind: an L1 gate relu(g); a hard-concrete gate in [0, 1] under the "
         "expected-L0 price; or relative_l1, relu(g) over its group's largest, which a "
         "BatchNorm after the gated conv cannot cancel by scaling a whole group down; each "
         "stage's residual stream: the stem or shortcut conv, every block's second conv and "
         "every BatchNorm on it; each block's inner width) under one price, a unit priced by "
         "its share of the multiply-adds (or its square root: price_by); dead channels are "
         "removed from every layer and the SGD momentum after each epoch, the price off in a "
         "warm-up and in the last epochs (free_frac). With target_ratio (the standard and "
         "full profiles) each priced epoch also removes, prunes_per_epoch times (evenly "
         "spaced, the last at its end), the units of lowest gate relative to their group's "
         "largest or (budget_score=median, the standard profile) to their group's median, "
         "ranked over the whole network, until the network costs dense MACs / target_ratio "
         "** (step / steps): the gates choose which blocks keep width, the schedule how many "
         "MACs stay (the relative gate's price grows each group's largest gate, so the "
         "median ranks units where the largest ranks groups). The "
         "alternatives are cut to the learned network's multiply-adds: (a) the dense network "
         "the same epochs, (b) every width scaled by one factor and trained from scratch, (c) "
         "Torch-Pruning's group-L2 one-shot pruning of the dense network, (d) network slimming "
         "(L1 on the BatchNorm scales in training, global threshold), (e) widthlab's "
         "compensated whole-network cut of the dense network; (c)-(e) are then fine-tuned. "
         "Accuracy is the final epoch's; latency is measured on one CPU thread (median; "
         "BatchNorm folded into the convs, channels-last; the eager columns: the plain "
         "model).")


class ResnetStudy(Study):
    """Learned widths of ResNet-20 against the practitioner's alternatives at equal MACs."""

    name = NAME
    title = "How wide should each block of a residual CNN be? Learned widths of ResNet-20"
    journal_sections = ("Implement the first version of a Sparsifier Network",)
    journal_budget = ("never run (the journal's sparsifier: one hidden layer, 60 epochs, all "
                      "60,000 training images); Torch-Pruning's ResNet-56 row trains CIFAR-10 "
                      "for hundreds of epochs")
    profiles = PROFILES
    print_columns = ("label", "acc", "macs", "macs_ratio", "latency_b64_ms", "epochs")

    def experiments(self, profile: ResnetProfile, dataset: str) -> list:
        return steps(profile)

    def tables(self, store: Store, runs: Mapping[str, Mapping[str, str]]) -> Tables:
        return {d: an.tables_of(store, by_exp) for d, by_exp in runs.items()}

    def verdicts(self, tables: Tables) -> Verdicts:
        out: Verdicts = {}
        for d, t in tables.items():
            out[d] = [vd.learned_target(t.final), vd.learned_beats_alternatives(t.final),
                      vd.latency_falls(t.final), vd.shrinking_is_cheaper(t.curves),
                      vd.variance_agrees(t.groups)]
            if d == "fashion-mnist":
                out[d].append(vd.fashion_wider(tables))
        return out

    def sections(self, tables: Tables, verdicts: Verdicts) -> list[Section]:
        out = []
        for d in ordered_datasets(list(tables)):
            t, name = tables[d], display_name(d)
            out.append(Section(
                title=f"Learned widths of ResNet-20: {name}",
                intro=INTRO + (f" {t.note}" if t.note else ""),
                verdicts=verdicts.get(d, []), run_ids=list(t.runs), budget=t.budget,
                figures=[
                    Figure(f"{d}-acc-macs", f"{name}: final-epoch accuracy against "
                           "multiply-adds", lambda t=t, n=name: fg.acc_vs_macs(t.final, n)),
                    Figure(f"{d}-epochs", f"{name}: multiply-adds and training seconds per "
                           "epoch", lambda t=t, n=name: fg.per_epoch(t.curves, n)),
                    Figure(f"{d}-latency", f"{name}: CPU latency (1 thread, median) against "
                           "multiply-adds", lambda t=t, n=name: fg.latency(t.final, n)),
                    Figure(f"{d}-stds", f"{name}: activation std of every channel per group "
                           "(the journal's statistic)", lambda t=t, n=name: fg.stds(t.stds, n))],
                tables=[(f"{name}: final networks", self.summary_frame(t)),
                        (f"{name}: per group, the journal's signal and the learned width",
                         t.groups)]))
        return out

    @staticmethod
    def summary_frame(t) -> pd.DataFrame:
        cols = ["label", "acc", "macs", "macs_ratio", "params", "latency_b1_ms",
                "latency_b64_ms", "speedup_b64", "latency_eager_b64_ms", "speedup_eager_b64",
                "epochs", "train_gmacs"]
        return t.final.reindex(columns=cols).round(3)

    def summary(self, tables: Tables) -> dict[str, pd.DataFrame]:
        """``resnet-<dataset>``: the final networks."""
        return {f"resnet-{d}": self.summary_frame(t) for d, t in tables.items()}


STUDY = ResnetStudy()
