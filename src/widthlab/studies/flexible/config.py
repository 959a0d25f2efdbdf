"""What the flexible-layer study trains: its profiles and its steps (declarative, plus the
derived steps that read earlier runs' final cut-offs).

Every step is one engine run per dataset holding all its models (the bank trains them fused):

- ``convergence`` (label ``flexible:convergence``): starting ``x0`` from 0 to ``N``, with L2
  and a size penalty, and with neither;
- ``frontier`` (``flexible:frontier``): a penalty sweep with replicates, with and without L2,
  growing from ``x0 = 0``;
- ``frontier-static`` (``flexible-static:frontier``, derived): a static twin of every frontier
  model at the width it converged to, plus full-width static networks;
- ``minima`` (``flexible:minima``): deterministic versus random slope, no penalty, no L2;
- ``pretrain-<L>`` (``flexible-static:pretrain``, derived): the static pretraining chain, one
  run per positive level ``L`` (models frozen with lr 0 once they reach their level), each
  starting from the previous one (``TrainConfig.init_from``);
- ``pretrained`` (``flexible:pretrained``, derived): the pretrained networks, ``x0`` reset to
  ``grow_x0``, flexible training;
- ``size-only`` (``flexible:size-only``, derived): the minima networks with frozen weights
  (lr 0); only ``x0`` trains, from where it ended.

Example::

    from widthlab.studies.flexible.config import PROFILES, steps

    [s.name for s in steps(PROFILES["quick"])]   # convergence, frontier, frontier-static, ...
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from widthlab.engine import TrainConfig
from widthlab.errors import UsageError
from widthlab.nn import ModelSpec
from widthlab.nn.flexible import FlexibleCutoff
from widthlab.store import Store
from widthlab.studies.base import Derived, Experiment, Profile, RunContext, Step
from widthlab.studies.flexible.hooks import LastEpochProbe, RandomActivationProbe

NAME = "flexible"
HELPER = "flexible-static"   # static references and pretraining: not reported on their own
RUNS = ("convergence", "frontier", "minima", "pretrained", "size-only")  # reported experiments
ARMS = ("l2", "none")        # with L2 (weight decay) or without
SLOPES = ("deterministic", "random")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class FlexibleProfile(Profile):
    """Sizes of every experiment (the journal's numbers in ``full``)."""

    n: int = field(metadata=_help("N: neurons of the flexible layer"))
    train_size: int | None = field(metadata=_help("training samples used (none: all 55000)"))
    epochs: int = field(metadata=_help("epochs of the convergence and frontier runs"))
    starts_step: int = field(metadata=_help("convergence: x0 from 0 to N in these steps"))
    conv_replicates: int = field(metadata=_help("convergence: seeds per start"))
    conv_penalty: float = field(metadata=_help("convergence, arm with L2: size penalty"))
    l2: float = field(metadata=_help("weight decay of the arms with L2"))
    penalties: tuple[float, ...] = field(metadata=_help("frontier: the size penalties"))
    replicates: int = field(metadata=_help("frontier: seeds per penalty and arm"))
    minima_models: int = field(metadata=_help("minima: models per slope kind"))
    minima_epochs: int = field(metadata=_help("minima: epochs"))
    pretrain_levels: tuple[int, ...] = field(
        metadata=_help("epochs of static training before flexible training"))
    pretrain_models: int = field(metadata=_help("pretrained: models per level"))
    pretrain_epochs: int = field(metadata=_help("pretrained: flexible epochs after pretraining"))
    size_only_epochs: int = field(metadata=_help("size-only: epochs with frozen weights"))
    grow_x0: float = field(default=0.0, metadata=_help("start of the runs that grow the layer"))
    batch_size: int = field(default=128, metadata=_help("minibatch size"))
    lr: float = field(default=1e-3, metadata=_help("learning rate of the weights (Adam)"))
    x0_lr: float = field(default=1.0, metadata=_help("learning rate of the cut-off x0"))
    k: float = field(default=1.0, metadata=_help("slope: 1 is a gray zone of about 10 neurons"))

    def validate(self) -> None:
        if self.n < 2 or self.starts_step < 1 or min(
                self.replicates, self.conv_replicates, self.minima_models,
                self.pretrain_models) < 1:
            raise UsageError("n must be >= 2 and step, replicate and model counts >= 1")
        if not self.penalties or any(not (lam >= 0) for lam in self.penalties):
            raise UsageError(f"penalties must be a non-empty list of values >= 0, got "
                             f"{self.penalties}; e.g. 1e-3,1e-5")
        if any(lv < 0 for lv in self.pretrain_levels) or not self.pretrain_levels:
            raise UsageError(f"pretrain_levels must be epochs >= 0, got {self.pretrain_levels}; "
                             "e.g. 0,1,2")


def _decades(hi: float, lo: float, step: float) -> tuple[float, ...]:
    count = int(round((hi - lo) / step)) + 1
    return tuple(float(10 ** (hi - i * step)) for i in range(count))


PROFILES = {
    # 58 s per dataset on one thread beside another job: N = 128 (the quick widths stay below
    # 100), 10000 training images, 4-5 epochs, one model per penalty, two per pretraining level
    "quick": FlexibleProfile(n=128, train_size=10000, epochs=4, starts_step=32,
                             conv_replicates=1, conv_penalty=1e-4, l2=1e-3,
                             penalties=_decades(-2.5, -7.5, 1.0), replicates=1, minima_models=3,
                             minima_epochs=5, pretrain_levels=(0, 1, 2), pretrain_models=2,
                             pretrain_epochs=4, size_only_epochs=2),
    # the journal's epochs (15; 30 for the local minima and the pretrained networks, after
    # 0/5/10 epochs of pretraining) at N = 200 on 20,000 images, starts every 40
    "standard": FlexibleProfile(n=200, train_size=20_000, epochs=15, starts_step=40,
                                conv_replicates=1, conv_penalty=1e-4, l2=1e-3,
                                penalties=_decades(-2.5, -7.5, 1.0), replicates=2,
                                minima_models=3, minima_epochs=30, pretrain_levels=(0, 5, 10),
                                pretrain_models=3, pretrain_epochs=30, size_only_epochs=10),
    # the journal: N = 500, starts every 25, penalties 10^-2.5..10^-7.5, 7 replicates,
    # 30 models x 30 epochs, pretraining 0/5/10 epochs
    "full": FlexibleProfile(n=500, train_size=None, epochs=15, starts_step=25, conv_replicates=1,
                            conv_penalty=1e-4, l2=1e-3, penalties=_decades(-2.5, -7.5, 0.5),
                            replicates=7, minima_models=30, minima_epochs=30,
                            pretrain_levels=(0, 5, 10), pretrain_models=30, pretrain_epochs=30,
                            size_only_epochs=10),
}


# ------------------------------------------------------------------------------ building blocks
def _config(p: FlexibleProfile, epochs: int, **kw) -> TrainConfig:
    """The settings every run shares (the study label, device and dataset are set when run)."""
    return TrainConfig(epochs=epochs, batch_size=p.batch_size, lr=p.lr, train_size=p.train_size,
                       stats_epochs="none", eval_splits=("test",), **kw)


def _spec(width: int, seed: int, *, wd: float = 0.0, variant: str = "flexible",
          lr: float | None = None, **options) -> ModelSpec:
    return ModelSpec((int(width),), seed=int(seed), weight_decay=float(wd), variant=variant,
                     lr=lr, options=tuple(sorted(options.items())))


def _cutoff(p: FlexibleProfile, x0, penalty, **kw) -> functools.partial:
    """A factory of the flexible cut-off (the profile's slope and x0 learning rate)."""
    return functools.partial(FlexibleCutoff, x0=x0, penalty=penalty, k=p.k, lr=p.x0_lr, **kw)


def last_values(store: Store, run_id: str, name: str, split: str = "train") -> dict[int, float]:
    """``{model: value}`` of a metric at each model's last stored epoch."""
    m = Store.open(store).metrics(run_id)
    m = m[(m.name == name) & (m.split == split)].sort_values("epoch")
    return {int(k): float(v) for k, v in m.groupby("model")["value"].last().items()}


def _needed(ctx: RunContext, step: str, what: str) -> str:
    if step not in ctx.runs:
        raise UsageError(f"the flexible {what} needs the {step} run; select it too "
                         f"(--experiment {step},...)")
    return ctx.runs[step]


# ------------------------------------------------------------------------------ experiments
def convergence(p: FlexibleProfile) -> Experiment:
    """Starting x0 from 0 to N, with (L2 + penalty) and without."""
    specs, x0, lam = [], [], []
    for arm in ARMS:
        for start in range(0, p.n + 1, p.starts_step):
            for r in range(p.conv_replicates):
                specs.append(_spec(p.n, r, wd=p.l2 if arm == "l2" else 0.0, arm=arm,
                                   start=float(start)))
                x0.append(float(start))
                lam.append(p.conv_penalty if arm == "l2" else 0.0)
    return Experiment("convergence", specs, _config(p, p.epochs),
                      modifiers=(_cutoff(p, x0, lam),), hooks=(LastEpochProbe(),))


def frontier_specs(p: FlexibleProfile) -> list[ModelSpec]:
    """The frontier's models: arm x penalty x replicate (the penalty is in the options)."""
    return [_spec(p.n, r, wd=p.l2 if arm == "l2" else 0.0, arm=arm, penalty=float(penalty))
            for arm in ARMS for penalty in p.penalties for r in range(p.replicates)]


def frontier(p: FlexibleProfile) -> Experiment:
    """The penalty sweep, growing from ``grow_x0``."""
    specs = frontier_specs(p)
    lam = [float(dict(s.options)["penalty"]) for s in specs]
    return Experiment("frontier", specs, _config(p, p.epochs),
                      modifiers=(_cutoff(p, p.grow_x0, lam),),
                      hooks=(LastEpochProbe(train_acc=True),))


def frontier_static(ctx: RunContext) -> Experiment:
    """Static twins of the frontier models at their converged widths, and full-width static
    networks (the best static accuracy), trained the same way."""
    p = ctx.profile
    flex_id = _needed(ctx, "frontier", "static references")
    final = last_values(ctx.store, flex_id, "x0")
    static = []
    for m, s in enumerate(frontier_specs(p)):
        opts = dict(s.options)
        width = int(np.clip(round(final.get(m, p.grow_x0)), 1, p.n))
        static.append(_spec(width, s.seed, wd=s.weight_decay, variant="static", arm=opts["arm"],
                            penalty=opts["penalty"], twin_of=m, flexible_run=flex_id))
    for arm in ARMS:
        for r in range(p.replicates):
            static.append(_spec(p.n, r, wd=p.l2 if arm == "l2" else 0.0, variant="static",
                                arm=arm, best=True, flexible_run=flex_id))
    return Experiment("frontier-static", static, _config(p, p.epochs),
                      hooks=(LastEpochProbe(train_acc=True, prune=False, out_weights=False),),
                      label=f"{HELPER}:frontier")


def _minima_specs(p: FlexibleProfile, **extra) -> list[ModelSpec]:
    return [_spec(p.n, r, slope=kind, **extra) for kind in SLOPES
            for r in range(p.minima_models)]


def minima(p: FlexibleProfile) -> Experiment:
    """Deterministic versus random slope, no penalty, no L2, growing from ``grow_x0``."""
    specs = _minima_specs(p)
    rnd = [dict(s.options)["slope"] == "random" for s in specs]
    return Experiment("minima", specs, _config(p, p.minima_epochs, record_batch_loss=True),
                      modifiers=(_cutoff(p, p.grow_x0, 0.0, random_slope=rnd),),
                      hooks=(RandomActivationProbe(), LastEpochProbe()))


def _levels(p: FlexibleProfile) -> list[int]:
    return sorted(set(p.pretrain_levels))


def _members(p: FlexibleProfile) -> list[tuple[int, int]]:
    return [(level, r) for level in _levels(p) for r in range(p.pretrain_models)]


def stage_names(p: FlexibleProfile) -> list[str]:
    """The pretraining chain's steps, one per positive level: ``pretrain-<level>``."""
    return [f"pretrain-{lv}" for lv in _levels(p) if lv > 0]


def _pretrain_stage(target: int, done: int, previous: str | None):
    """The chain's stage that trains every model of a level >= ``target`` from ``done`` to
    ``target`` epochs (the others stay frozen, lr 0), from the ``previous`` stage's run."""

    def build(ctx: RunContext) -> Experiment:
        p = ctx.profile
        prev = None if previous is None else _needed(ctx, previous, "pretraining chain")
        specs = [_spec(p.n, r, variant="static", lr=None if level >= target else 0.0,
                       pretrain=level) for level, r in _members(p)]
        return Experiment(f"pretrain-{target}", specs,
                          _config(p, target - done, init_from=prev), label=f"{HELPER}:pretrain")

    return build


def pretrain_chain(p: FlexibleProfile) -> list[Derived]:
    """The static pretraining stages, each starting from the previous one's weights."""
    out, done, previous = [], 0, None
    for target, name in zip([lv for lv in _levels(p) if lv > 0], stage_names(p), strict=True):
        out.append(Derived(name, _pretrain_stage(target, done, previous)))
        done, previous = target, name
    return out


def pretrained(ctx: RunContext) -> Experiment:
    """Flexible training of the pretrained networks (x0 reset to ``grow_x0``)."""
    p = ctx.profile
    chain = stage_names(p)
    prev = _needed(ctx, chain[-1], "pretrained experiment") if chain else None
    specs = [_spec(p.n, r, pretrain=level) for level, r in _members(p)]
    cfg = _config(p, p.pretrain_epochs, record_batch_loss=True, init_from=prev)
    return Experiment("pretrained", specs, cfg, modifiers=(_cutoff(p, p.grow_x0, 0.0),),
                      hooks=(LastEpochProbe(),))


def size_only(ctx: RunContext) -> Experiment:
    """The minima networks with frozen weights (lr 0): only ``x0`` trains, from its end value."""
    p = ctx.profile
    minima_id = _needed(ctx, "minima", "size-only experiment")
    final = last_values(ctx.store, minima_id, "x0")
    specs = _minima_specs(p, lr=0.0)
    x0 = [final.get(m, p.grow_x0) for m in range(len(specs))]
    return Experiment("size-only", specs, _config(p, p.size_only_epochs, init_from=minima_id),
                      modifiers=(_cutoff(p, x0, 0.0),), hooks=(LastEpochProbe(),))


def steps(p: FlexibleProfile) -> list[Step]:
    """Every step, in the order they run (each derived step after what it reads)."""
    return [convergence(p), frontier(p), Derived("frontier-static", frontier_static), minima(p),
            *pretrain_chain(p), Derived("pretrained", pretrained),
            Derived("size-only", size_only)]


# ------------------------------------------------------------------------------ selection
def _needs(p: FlexibleProfile) -> dict[str, tuple[str, ...]]:
    """What each step needs besides itself (``frontier`` also brings its static references:
    the frontier's verdicts compare with them)."""
    chain = stage_names(p)
    needs: dict[str, tuple[str, ...]] = {
        "frontier": ("frontier-static",), "frontier-static": ("frontier",),
        "pretrained": tuple(chain), "size-only": ("minima",)}
    for i, name in enumerate(chain):
        needs[name] = tuple(chain[:i])
    return needs


def selected(p: FlexibleProfile, only: Sequence[str]) -> list[str]:
    """The steps to run for ``only`` (step names), with everything they need, in run order.

    Raises
    ------
    UsageError
        If a name is not a step of ``p``.
    """
    names = [s.name for s in steps(p)]
    bad = sorted(set(only) - set(names))
    if bad:
        raise UsageError(f"unknown experiment(s) {', '.join(bad)} of the flexible study; "
                         f"choose from {', '.join(names)}")
    needs, todo = _needs(p), set()
    stack = list(only)
    while stack:
        name = stack.pop()
        if name not in todo:
            todo.add(name)
            stack += needs.get(name, ())
    return [n for n in names if n in todo]
