"""The journal's conjecture, by its own construction: a teacher-labelled noise task.

A trained, undersized model ``M`` of the variance sweep (the width closest to the profile's
``teacher_width``, lowest seed) labels standard-normal inputs; on that task the very same layer
is exactly right (100% accuracy), and a width sweep trained on it through the engine (a
:class:`~widthlab.studies.base.Derived` step: ``M`` is known once the sweep is trained) shows
how the "right size" moved.

Example::

    teacher, task = teacher_and_task(store, source_run_id, PROFILES["quick"])
    task.n_classes, len(task.train)   # 10, 20000
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine import TrainConfig, load_bank
from widthlab.errors import UsageError
from widthlab.nn.bank import MLP
from widthlab.store import Store
from widthlab.studies.base import Experiment, RunContext, sweep_specs
from widthlab.studies.pca.config import NAME, SOURCE_EXPERIMENT, SOURCE_STUDY, PCAProfile

N_TEST = 10_000  # noise test inputs (and a fifth of that for validation)


@dataclass(frozen=True)
class TaskSplits(DatasetSplits):
    """Splits whose label space is fixed (``n_classes``) whatever labels they happen to hold:
    the engine builds an ``n_classes`` head even if the teacher never predicts some class."""

    n_classes: int = 10

    def to(self, device: torch.device | str) -> TaskSplits:
        return dataclasses.replace(self, train=self.train.to(device), val=self.val.to(device),
                                   test=self.test.to(device))


def noise_task(teacher: MLP, n_train: int, n_test: int, in_features: int, seed: int,
               name: str) -> TaskSplits:
    """The conjecture's dataset: standard-normal inputs (the scale of normalised images)
    labelled by ``teacher``'s predictions, so ``teacher`` is 100% accurate on it; the label
    space is the teacher's outputs."""
    g = torch.Generator().manual_seed(int(seed))

    def split(n: int) -> Split:
        x = torch.randn(n, in_features, generator=g)
        with torch.no_grad():
            y = torch.cat([teacher(x[i:i + 4096]).argmax(1) for i in range(0, n, 4096)])
        return Split(x, y)

    return TaskSplits(name, split(n_train), split(max(n_test // 5, 1)), split(n_test),
                      0.0, 1.0, int(seed), n_classes=int(teacher.sizes[-1]))


def source_run(ctx: RunContext) -> str:
    """The finished variance run this study analyses (from ``ctx.upstream``)."""
    runs = ctx.upstream[SOURCE_STUDY]
    source = runs[SOURCE_EXPERIMENT] if SOURCE_EXPERIMENT in runs else runs.ids()[0]
    info = ctx.store.get_run(source)
    if info is None or info["status"] != "done":
        raise UsageError(f"run {source!r} is not a finished run in {ctx.store.root}; run "
                         "`widthlab study variance` first")
    return source


def teacher_and_task(st: Store, source: str, prof: PCAProfile) -> tuple[MLP, TaskSplits]:
    """The conjecture's teacher M (the sweep's width closest to ``prof.teacher_width`` in log
    scale, lowest seed) and its noise task, rebuilt deterministically from the stored run."""
    models = st.models(source)
    ok = models[models.status == "ok"]
    if ok.empty:
        raise UsageError(f"run {source!r} has no trained model to act as the teacher")
    w = int(ok.width.iloc[np.argmin(np.abs(np.log(ok.width.to_numpy(float))
                                          - np.log(prof.teacher_width)))])
    m = int(ok[ok.width == w].sort_values("seed").model.iloc[0])
    teacher = load_bank(st, source).export(m).eval()
    name = f"noise-{source[-12:]}-m{m}"
    return teacher, noise_task(teacher, prof.conj_train, N_TEST, teacher.sizes[0], seed=m,
                               name=name)


def conjecture_experiment(ctx: RunContext) -> Experiment:
    """The conjecture's width sweep on the noise task of the analysed variance run."""
    p: PCAProfile = ctx.profile
    _, data = teacher_and_task(ctx.store, source_run(ctx), p)
    cfg = TrainConfig(epochs=p.conj_epochs, val_size=len(data.val), stats_epochs="none",
                      eval_splits=("test",))
    return Experiment("conjecture", sweep_specs(p.conj_widths, p.conj_seeds, NAME), cfg,
                      data=data)
