"""The flexible-layer study (journal: "Implement a metric-less resizing" to "Try to get rid of the
local minima", and "Try training only the size on a thoroughly trained network").

One hidden layer of ``N`` neurons scaled by ``sigmoid(k (x0 - i))`` learns its width ``x0``
(:class:`~widthlab.nn.flexible.FlexibleCutoff`, lr 1, slope 1), with a size penalty
``lambda * integral of the scaler``. Every experiment is one engine run per dataset holding all
its models (the bank trains them fused), labelled ``flexible:<experiment>``:

- ``convergence``: starting ``x0`` from 0 to ``N`` (step 25 in the journal), two arms: with L2 and
  a size penalty, and with neither (the journal's post-erratum setting); final width and accuracy
  versus the start;
- ``frontier``: a penalty sweep ``10^-2.5 .. 10^-7.5`` with replicates, with and without L2,
  growing from ``x0 = 0``; then a helper run (``flexible-static:frontier``) trains a static twin of
  every flexible model at the width it converged to, plus static networks of the full width (the
  best static accuracy); medians on train and test accuracy. The plateau explanation (sum of
  ``|output weights|`` per hidden neuron against the scaler) reads the same runs;
- ``minima``: deterministic versus random slope, no penalty, no L2, from ``x0 = 0``: width, mean
  size gradient and batch loss per epoch; an epoch probe also measures the size gradient of the
  journal's "random activation" (Bernoulli keep with probability ``s_i``), which is exactly zero;
- ``pretrained``: 0, 5 and 10 epochs of static training (a chain of ``flexible-static:pretrain``
  runs, models frozen with lr 0 once they reach their level), then ``x0`` reset to 0 and flexible
  training (``TrainConfig.init_from``): width over epochs;
- ``size-only``: the minima networks (thoroughly trained flexible networks) with frozen weights
  (lr 0); only ``x0`` trains, from where it ended: the sign of the size gradient.

Everything after training reads the store only (:func:`report_sections`, the CLI's verdicts).

Example::

    from widthlab.studies import flexible

    ids = flexible.run("mnist", "quick", experiment="frontier", store="widthlab-runs")
    table = flexible.frontier_table("widthlab-runs", ids["frontier"])   # one row per model
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from widthlab.data.tensors import DatasetSplits, load_splits
from widthlab.engine.trainer import TrainConfig, evaluate, train
from widthlab.errors import UsageError
from widthlab.metrics.variance import Verdict
from widthlab.nn.bank import ModelSpec
from widthlab.nn.flexible import (
    PRUNE_THRESHOLD,
    FlexibleCutoff,
    FlexibleMLP,
    cutoff_scale,
    random_activation,
)
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.studies._common import (
    dataset_option,
    datasets_for,
    device_option,
    display_name,
    newest_runs,
    profile_option,
    quiet_option,
    run_label,
    store_option,
)

STUDY = "flexible"
HELPER = "flexible-static"   # static references and pretraining: not reported on their own
EXPERIMENTS = ("convergence", "frontier", "plateau", "minima", "size-only")  # CLI choices
RUNS = ("convergence", "frontier", "minima", "pretrained", "size-only")    # stored experiments
NEEDS = {"convergence": ("convergence",), "frontier": ("frontier",), "plateau": ("frontier",),
         "minima": ("minima", "pretrained"), "size-only": ("minima", "size-only"),
         "all": RUNS}
ARMS = ("l2", "none")        # with L2 (weight decay) or without
SLOPES = ("deterministic", "random")
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


@dataclass(frozen=True)
class Profile:
    """Sizes of every experiment (the journal's numbers in ``full``)."""

    n: int                              # N: neurons of the flexible layer
    train_size: int | None              # training samples used (None: all 55000)
    epochs: int                         # convergence and frontier
    starts_step: int                    # convergence: x0 from 0 to n in these steps
    conv_replicates: int                # convergence: seeds per start
    conv_penalty: float                 # convergence, arm "l2": size penalty
    l2: float                           # weight decay of the arms with L2
    penalties: tuple[float, ...]        # frontier
    replicates: int                     # frontier: seeds per penalty and arm
    minima_models: int                  # per slope kind
    minima_epochs: int
    pretrain_levels: tuple[int, ...]    # epochs of static training before flexible training
    pretrain_models: int                # per level
    pretrain_epochs: int                # flexible epochs after the pretraining
    size_only_epochs: int
    grow_x0: float = 0.0                # start of the runs that grow the layer
    batch_size: int = 128
    lr: float = 1e-3                    # weights (Adam)
    x0_lr: float = 1.0                  # the cut-off (the journal's value)
    k: float = 1.0                      # slope: a gray zone of about 10 neurons


def _decades(hi: float, lo: float, step: float) -> tuple[float, ...]:
    count = int(round((hi - lo) / step)) + 1
    return tuple(float(10 ** (hi - i * step)) for i in range(count))


PROFILES = {
    # a few minutes per dataset on a 2-core CPU: N = 160, 10000 training images, 4-5 epochs
    "quick": Profile(n=160, train_size=10000, epochs=4, starts_step=40, conv_replicates=1,
                     conv_penalty=1e-4, l2=1e-3, penalties=_decades(-2.5, -7.5, 1.0),
                     replicates=2, minima_models=3, minima_epochs=5, pretrain_levels=(0, 1, 2),
                     pretrain_models=3, pretrain_epochs=4, size_only_epochs=2),
    # the journal: N = 500, starts every 25, penalties 10^-2.5..10^-7.5, 7 replicates,
    # 30 models x 30 epochs, pretraining 0/5/10 epochs
    "full": Profile(n=500, train_size=None, epochs=15, starts_step=25, conv_replicates=1,
                    conv_penalty=1e-4, l2=1e-3, penalties=_decades(-2.5, -7.5, 0.5),
                    replicates=7, minima_models=30, minima_epochs=30,
                    pretrain_levels=(0, 5, 10), pretrain_models=30, pretrain_epochs=30,
                    size_only_epochs=10),
}


def get_profile(profile: str | Profile = "quick", **overrides) -> Profile:
    """A profile by name, with fields replaced by ``overrides`` (e.g. ``n=50, epochs=1``)."""
    if isinstance(profile, Profile):
        p = profile
    elif profile in PROFILES:
        p = PROFILES[profile]
    else:
        raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UsageError(f"unknown profile setting(s) {', '.join(unknown)}; settings: "
                         f"{', '.join(sorted(fields))}")
    p = dataclasses.replace(p, **overrides)
    if p.n < 2 or p.starts_step < 1 or min(p.replicates, p.conv_replicates, p.minima_models,
                                           p.pretrain_models) < 1:
        raise UsageError("n must be >= 2 and step, replicate and model counts >= 1")
    if not p.penalties or any(not (lam >= 0) for lam in p.penalties):
        raise UsageError(f"penalties must be a non-empty list of values >= 0, got {p.penalties}")
    if any(lv < 0 for lv in p.pretrain_levels) or not p.pretrain_levels:
        raise UsageError(f"pretrain_levels must be epochs >= 0, got {p.pretrain_levels}")
    return p


# ------------------------------------------------------------------------------ epoch probes
def _cutoff(bank) -> FlexibleCutoff | None:
    found = [mod for mod in bank.modifiers if isinstance(mod, FlexibleCutoff)]
    return found[0] if found else None


class LastEpochProbe:
    """Epoch hook: after the last epoch, store what the report needs beyond the engine's metrics.

    - ``out_abs`` (array, per model): sum over outputs of ``|W_out[:, i]|`` per hidden neuron;
    - ``acc`` / ``loss`` on the training split (``train_acc=True``);
    - ``acc_pruned`` and ``pruned_width`` on the test split: the model pruned to the neurons left
      of its cut-off (:meth:`FlexibleMLP.prune`: up to the end of the gray zone), flexible
      models only.
    """

    def __init__(self, *, train_acc: bool = False, prune: bool = True, out_weights: bool = True):
        self.train_acc, self.prune, self.out_weights = train_acc, prune, out_weights

    def describe(self) -> dict:
        return {"probe": "flexible-last-epoch", "train_acc": self.train_acc,
                "prune": self.prune, "out_weights": self.out_weights,
                "threshold": PRUNE_THRESHOLD}

    @torch.no_grad()
    def __call__(self, engine, epoch: int) -> list:
        if epoch != engine.cfg.epochs:
            return []
        bank, rows = engine.bank, []
        if self.train_acc:
            res = evaluate(bank, engine.data.train, batch_size=engine.cfg.eval_batch_size,
                           precision=engine.cfg.precision)
            for m, (acc, loss) in enumerate(zip(res.acc.tolist(), res.loss.tolist(),
                                                strict=True)):
                rows += [MetricRow(m, epoch, "train", "acc", acc),
                         MetricRow(m, epoch, "train", "loss", loss)]
        cut = _cutoff(bank)
        test = engine.data.test
        for m in range(bank.n_models):
            if self.out_weights:
                head = dict((n, v) for n, v, _ in bank.model_params(m))["layers.1.weight"]
                rows.append(ArrayRow(m, epoch, "out_abs",
                                     head.abs().sum(0).double().cpu().numpy()))  # (N,)
            if self.prune and cut is not None and len(bank.specs[m].hidden) == 1:
                pruned = FlexibleMLP.from_bank(bank, m).prune()
                correct = 0
                for i in range(0, len(test), 2000):
                    logits = pruned(test.x[i:i + 2000])  # (b, C)
                    correct += int((logits.argmax(1) == test.y[i:i + 2000]).sum())
                rows += [MetricRow(m, epoch, "test", "acc_pruned", correct / max(len(test), 1)),
                         MetricRow(m, epoch, "test", "pruned_width",
                                   float(pruned[0].out_features))]
        return rows


class RandomActivationProbe:
    """Epoch hook: the size gradient of the journal's "random activation" against the scaler's.

    On the first ``samples`` training images, with the current weights and cut-offs, each model's
    ``dCE/dx0`` is computed twice: activations multiplied by the scaler ``s`` (what training does)
    and multiplied by a Bernoulli(``s``) mask (random activation). Stored per model and epoch as
    ``size_grad_scaler`` and ``size_grad_random_activation`` (split ``train``).
    """

    def __init__(self, samples: int = 512, seed: int = 0):
        self.samples, self.seed = int(samples), int(seed)

    def describe(self) -> dict:
        return {"probe": "random-activation", "samples": self.samples, "seed": self.seed}

    def __call__(self, engine, epoch: int) -> list:
        bank, cut = engine.bank, _cutoff(engine.bank)
        if cut is None:
            return []
        x = engine.data.train.x[:self.samples]
        y = engine.data.train.y[:self.samples]
        with torch.no_grad():
            z, _ = bank.hidden(x, track=False)  # (B, H) pre-activations
            a = torch.relu(z)
        x0 = cut.x0.detach().clone().requires_grad_(True)  # (M,)
        um = cut.unit_model
        gen = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + epoch)
        rows = []
        for name in ("scaler", "random_activation"):
            s = cutoff_scale(cut.index, x0[um], cut.slope().detach()[um])  # (H,)
            h = a * s if name == "scaler" else random_activation(a, s, gen)
            ce = bank.per_model_loss(bank.head(h), y)  # (M,)
            (grad,) = torch.autograd.grad(ce.sum(), x0)
            rows += [MetricRow(m, epoch, "train", f"size_grad_{name}", float(g))
                     for m, g in enumerate(grad.tolist())]
        return rows


# ------------------------------------------------------------------------------ training
def _config(dataset: str, p: Profile, experiment: str, epochs: int, *, helper: bool = False,
            **kw) -> TrainConfig:
    return TrainConfig(dataset=dataset, epochs=epochs, batch_size=p.batch_size, lr=p.lr,
                       train_size=p.train_size, stats_epochs="none", eval_splits=("test",),
                       study=run_label(HELPER if helper else STUDY, experiment), **kw)


def _spec(width: int, seed: int, *, wd: float = 0.0, variant: str = "flexible",
          lr: float | None = None, **options) -> ModelSpec:
    return ModelSpec((int(width),), seed=int(seed), weight_decay=float(wd), variant=variant,
                     lr=lr, options=tuple(sorted(options.items())))


def _last_values(st: Store, run_id: str, name: str, split: str = "train") -> dict[int, float]:
    """``{model: value}`` of a metric at each model's last stored epoch."""
    m = st.metrics(run_id)
    m = m[(m.name == name) & (m.split == split)].sort_values("epoch")
    return {int(k): float(v) for k, v in m.groupby("model")["value"].last().items()}


def run_convergence(dataset: str, p: Profile, store: Store, data: DatasetSplits, *,
                    progress: bool = True, device: str = "auto") -> str:
    """Starting x0 from 0 to N, with (L2 + penalty) and without; one engine run."""
    starts = list(range(0, p.n + 1, p.starts_step))
    specs, x0, lam = [], [], []
    for arm in ARMS:
        for start in starts:
            for r in range(p.conv_replicates):
                specs.append(_spec(p.n, r, wd=p.l2 if arm == "l2" else 0.0, arm=arm,
                                   start=float(start)))
                x0.append(float(start))
                lam.append(p.conv_penalty if arm == "l2" else 0.0)
    cfg = _config(dataset, p, "convergence", p.epochs, device=device)
    return train(specs, cfg, store, data=data, progress=progress,
                 modifiers=[lambda: FlexibleCutoff(x0=x0, penalty=lam, k=p.k, lr=p.x0_lr)],
                 hooks=[LastEpochProbe()])


def run_frontier(dataset: str, p: Profile, store: Store, data: DatasetSplits, *,
                 progress: bool = True, device: str = "auto") -> tuple[str, str]:
    """The penalty sweep (one flexible run), then the static references (one helper run)."""
    specs, lam = [], []
    for arm in ARMS:
        for penalty in p.penalties:
            for r in range(p.replicates):
                specs.append(_spec(p.n, r, wd=p.l2 if arm == "l2" else 0.0, arm=arm,
                                   penalty=float(penalty)))
                lam.append(float(penalty))
    cfg = _config(dataset, p, "frontier", p.epochs, device=device)
    flex_id = train(specs, cfg, store, data=data, progress=progress,
                    modifiers=[lambda: FlexibleCutoff(x0=p.grow_x0, penalty=lam, k=p.k,
                                                      lr=p.x0_lr)],
                    hooks=[LastEpochProbe(train_acc=True)])
    final = _last_values(store, flex_id, "x0")
    static = []
    for m, s in enumerate(specs):
        opts = dict(s.options)
        width = int(np.clip(round(final.get(m, p.grow_x0)), 1, p.n))
        static.append(_spec(width, s.seed, wd=s.weight_decay, variant="static", arm=opts["arm"],
                            penalty=opts["penalty"], twin_of=m, flexible_run=flex_id))
    for arm in ARMS:
        for r in range(p.replicates):
            static.append(_spec(p.n, r, wd=p.l2 if arm == "l2" else 0.0, variant="static",
                                arm=arm, best=True, flexible_run=flex_id))
    cfg = _config(dataset, p, "frontier", p.epochs, helper=True, device=device)
    static_id = train(static, cfg, store, data=data, progress=progress,
                      hooks=[LastEpochProbe(train_acc=True, prune=False, out_weights=False)])
    return flex_id, static_id


def _minima_specs(p: Profile, **extra) -> list[ModelSpec]:
    return [_spec(p.n, r, slope=kind, **extra) for kind in SLOPES
            for r in range(p.minima_models)]


def run_minima(dataset: str, p: Profile, store: Store, data: DatasetSplits, *,
               progress: bool = True, device: str = "auto") -> str:
    """Deterministic versus random slope, no penalty, no L2, growing from ``grow_x0``."""
    specs = _minima_specs(p)
    rnd = [dict(s.options)["slope"] == "random" for s in specs]
    cfg = _config(dataset, p, "minima", p.minima_epochs, record_batch_loss=True, device=device)
    return train(specs, cfg, store, data=data, progress=progress,
                 modifiers=[lambda: FlexibleCutoff(x0=p.grow_x0, penalty=0.0, k=p.k,
                                                   random_slope=rnd, lr=p.x0_lr)],
                 hooks=[RandomActivationProbe(), LastEpochProbe()])


def run_pretrained(dataset: str, p: Profile, store: Store, data: DatasetSplits, *,
                   progress: bool = True, device: str = "auto") -> str:
    """Static pretraining for each level (a chain of helper runs), then flexible training."""
    levels = sorted(set(p.pretrain_levels))
    members = [(level, r) for level in levels for r in range(p.pretrain_models)]
    prev, done = None, 0
    for target in [lv for lv in levels if lv > 0]:
        # models whose level is reached stop moving (lr 0); the others train on to `target`
        specs = [_spec(p.n, r, variant="static", lr=None if level >= target else 0.0,
                       pretrain=level) for level, r in members]
        cfg = _config(dataset, p, "pretrain", target - done, helper=True, init_from=prev,
                      device=device)
        prev = train(specs, cfg, store, data=data, progress=progress)
        done = target
    specs = [_spec(p.n, r, pretrain=level) for level, r in members]
    cfg = _config(dataset, p, "pretrained", p.pretrain_epochs, record_batch_loss=True,
                  init_from=prev, device=device)
    return train(specs, cfg, store, data=data, progress=progress,
                 modifiers=[lambda: FlexibleCutoff(x0=p.grow_x0, penalty=0.0, k=p.k,
                                                   lr=p.x0_lr)],
                 hooks=[LastEpochProbe()])


def run_size_only(dataset: str, p: Profile, store: Store, data: DatasetSplits, minima_id: str,
                  *, progress: bool = True, device: str = "auto") -> str:
    """The minima networks with frozen weights (lr 0): only ``x0`` trains, from its end value."""
    final = _last_values(store, minima_id, "x0")
    specs = _minima_specs(p, lr=0.0)
    x0 = [final.get(m, p.grow_x0) for m in range(len(specs))]
    cfg = _config(dataset, p, "size-only", p.size_only_epochs, init_from=minima_id,
                  device=device)
    return train(specs, cfg, store, data=data, progress=progress,
                 modifiers=[lambda: FlexibleCutoff(x0=x0, penalty=0.0, k=p.k, lr=p.x0_lr)],
                 hooks=[LastEpochProbe()])


def run(dataset: str, profile: str | Profile = "quick", *, experiment: str = "all",
        store: Store | str = "widthlab-runs", progress: bool = True,
        data: DatasetSplits | None = None, device: str = "auto", **overrides) -> dict[str, str]:
    """Train what ``experiment`` needs on ``dataset`` (resuming or reusing stored runs).

    Parameters
    ----------
    dataset : "mnist" or "fashion-mnist" (or the name of ``data``)
    profile : "quick", "full" or a :class:`Profile`
    experiment : "all" or one of :data:`EXPERIMENTS` ("plateau" reads the frontier runs,
        "minima" also runs the pretrained experiment, "size-only" needs the minima run)
    data : DatasetSplits, optional
        Use these splits instead of loading ``dataset`` (tests, custom data).
    overrides
        :class:`Profile` fields (``n=50``, ``epochs=1``, ...).

    Returns
    -------
    dict
        ``{experiment: run_id}`` of the reported (``flexible:*``) runs; the helper runs
        (``flexible-static:*``) are found from them (:func:`find_static`, ``init_from``).
    """
    if experiment not in NEEDS:
        raise UsageError(f"unknown experiment {experiment!r}; choose all or "
                         f"{', '.join(EXPERIMENTS)}")
    p = get_profile(profile, **overrides)
    st = store if isinstance(store, Store) else Store(store)
    if data is None:
        data = load_splits(dataset, val_size=5000, seed=0)
    kw = dict(progress=progress, device=device)
    todo, ids = NEEDS[experiment], {}
    if "convergence" in todo:
        ids["convergence"] = run_convergence(dataset, p, st, data, **kw)
    if "frontier" in todo:
        ids["frontier"], _ = run_frontier(dataset, p, st, data, **kw)
    if "minima" in todo:
        ids["minima"] = run_minima(dataset, p, st, data, **kw)
    if "pretrained" in todo:
        ids["pretrained"] = run_pretrained(dataset, p, st, data, **kw)
    if "size-only" in todo:
        ids["size-only"] = run_size_only(dataset, p, st, data, ids["minima"], **kw)
    return ids


# ------------------------------------------------------------------------------ reading the store
def _metric_key(split: str, name: str) -> str:
    """Column name of a stored metric: ``acc``/``loss`` get their split (``test_acc``), the
    others (``x0``, ``size_grad``, ``acc_pruned``, ...) keep their name."""
    return f"{split}_{name}" if name in ("acc", "loss") else name


def model_meta(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per model that finished: index, width ``N``, seed, variant, weight decay and its
    options as columns (arm, start, penalty, slope, pretrain, ...)."""
    st = store if isinstance(store, Store) else Store(store)
    if st.get_run(run_id) is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    models = st.models(run_id)
    models = models[models.status == "ok"]
    opts = pd.DataFrame(list(models["options"]), index=models.index).drop(
        columns=["lr"], errors="ignore")
    return pd.concat([models[["model", "width", "seed", "variant"]], opts],
                     axis=1).reset_index(drop=True)


def _wide(metrics: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    metrics = metrics.assign(key=[_metric_key(s, n) for s, n in zip(metrics.split, metrics.name,
                                                                    strict=True)])
    wide = metrics.pivot_table(index=index, columns="key", values="value")
    wide.columns.name = None
    return wide.reset_index()


def model_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """:func:`model_meta` plus each model's last-epoch metrics (``x0``, ``test_acc``,
    ``train_acc``, ``acc_pruned``, ``pruned_width``, ...) and ``final_width`` (``x0`` clipped to
    ``[0, N]``) where stored."""
    st = store if isinstance(store, Store) else Store(store)
    table = model_meta(st, run_id)
    met = st.metrics(run_id)
    if not met.empty:
        last = met[met.epoch == met.groupby("model")["epoch"].transform("max")]
        table = table.merge(_wide(last, ["model"]), on="model", how="left")
    if "x0" in table:
        table["final_width"] = table["x0"].clip(lower=0, upper=table["width"])
    return table


def epoch_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """One row per (model, epoch): :func:`model_meta`, ``x0``, ``width_now`` (x0 clipped to
    [0, N]), ``size_grad``, ``size_grad_std``, ``loss_running``, ``test_acc`` and the probes'
    values."""
    st = store if isinstance(store, Store) else Store(store)
    wide = _wide(st.metrics(run_id), ["model", "epoch"])
    out = wide.merge(model_meta(st, run_id), on="model", how="inner")
    if "x0" in out:
        out["width_now"] = out["x0"].clip(lower=0, upper=out["width"])
    return out.sort_values(["model", "epoch"]).reset_index(drop=True)


def convergence_table(store: Store | str, run_id: str) -> pd.DataFrame:
    """Per model of a convergence run: arm, start, seed, final x0 and width, test accuracy."""
    t = model_table(store, run_id)
    cols = ["model", "arm", "start", "seed", "x0", "final_width", "test_acc", "acc_pruned",
            "pruned_width"]
    return t[[c for c in cols if c in t]].sort_values(["arm", "start", "seed"]).reset_index(
        drop=True)


def find_static(store: Store | str, flex_id: str) -> str | None:
    """The newest finished static-reference run made for the frontier run ``flex_id``."""
    st = store if isinstance(store, Store) else Store(store)
    runs = st.runs()
    runs = runs[(runs.study == run_label(HELPER, "frontier")) & (runs.status == "done")]
    for row in reversed(list(runs.itertuples())):
        opts = st.models(row.run_id)["options"]
        if len(opts) and opts.iloc[0].get("flexible_run") == flex_id:
            return row.run_id
    return None


def frontier_table(store: Store | str, flex_id: str, static_id: str | None = None
                   ) -> pd.DataFrame:
    """Per flexible model of a frontier run: arm, penalty, seed, converged width, train/test
    accuracy, and its static twin's (same seed, width and L2) train/test accuracy."""
    st = store if isinstance(store, Store) else Store(store)
    flex = model_table(st, flex_id)
    static_id = static_id or find_static(st, flex_id)
    cols = ["model", "arm", "penalty", "seed", "x0", "final_width", "train_acc", "test_acc",
            "acc_pruned"]
    out = flex[[c for c in cols if c in flex]].copy()
    if static_id is not None:
        twins = model_table(st, static_id)
        twins = twins[twins["twin_of"].notna()] if "twin_of" in twins else twins.iloc[:0]
        twins = twins.assign(twin_of=twins["twin_of"].astype(int))
        out = out.merge(twins[["twin_of", "width", "train_acc", "test_acc"]].rename(columns={
            "width": "static_width", "train_acc": "static_train_acc",
            "test_acc": "static_test_acc"}), left_on="model", right_on="twin_of",
            how="left").drop(columns="twin_of")
    return out.sort_values(["arm", "penalty", "seed"], ascending=[True, False, True]
                           ).reset_index(drop=True)


def best_static(store: Store | str, flex_id: str) -> pd.DataFrame:
    """Median train/test accuracy of the full-width static networks, one row per arm."""
    st = store if isinstance(store, Store) else Store(store)
    static_id = find_static(st, flex_id)
    if static_id is None:
        return pd.DataFrame(columns=["arm", "train_acc", "test_acc", "replicates"])
    t = model_table(st, static_id)
    t = t[t["best"].fillna(False).astype(bool)] if "best" in t else t.iloc[:0]
    return (t.groupby("arm").agg(train_acc=("train_acc", "median"),
                                 test_acc=("test_acc", "median"),
                                 replicates=("model", "count")).reset_index())


def frontier_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Medians per (arm, penalty) of :func:`frontier_table`."""
    cols = [c for c in ("final_width", "train_acc", "test_acc", "static_train_acc",
                        "static_test_acc", "acc_pruned") if c in table]
    g = table.groupby(["arm", "penalty"])
    out = g[cols].median()
    out["replicates"] = g.size()
    return out.reset_index().sort_values(["arm", "penalty"], ascending=[True, False]
                                         ).reset_index(drop=True)


def plateau_table(store: Store | str, flex_id: str) -> pd.DataFrame:
    """Per hidden neuron of every frontier model: arm, penalty, seed, index ``i``, scaler and
    sum of ``|output weights|`` (``out_abs``), plus where the neuron sits (``on``: scaler >
    0.993, ``off``: scaler < 0.007, else ``gray``)."""
    st = store if isinstance(store, Store) else Store(store)
    models = model_table(st, flex_id)
    arrays = st.arrays(flex_id, "out_abs")
    k = st.get_run(flex_id)["config"]["modifiers"][0]["k"]
    frames = []
    for row in models.itertuples():
        if row.model not in arrays:
            continue
        out_abs = arrays[row.model]
        i = np.arange(len(out_abs), dtype=np.float64)
        k_m = float(k[row.model] if isinstance(k, list) else k)
        s = 1.0 / (1.0 + np.exp(-np.clip(k_m * (row.x0 - i), -500, 500)))  # (N,) the scaler
        frames.append(pd.DataFrame({"model": row.model, "arm": row.arm, "penalty": row.penalty,
                                    "seed": row.seed, "i": i, "scaler": s,
                                    "out_abs": out_abs}))
    if not frames:
        raise UsageError(f"run {flex_id!r} stored no out_abs arrays; rerun its study")
    t = pd.concat(frames, ignore_index=True)
    t["zone"] = np.where(t.scaler > 0.993, "on", np.where(t.scaler < 0.007, "off", "gray"))
    return t


# ------------------------------------------------------------------------------ verdicts
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


def verdicts_for(store: Store | str, experiment: str, run_id: str) -> list[Verdict]:
    """The verdicts of one stored flexible run (``experiment`` as in :data:`RUNS`)."""
    st = store if isinstance(store, Store) else Store(store)
    if experiment == "convergence":
        out = convergence_verdicts(convergence_table(st, run_id))
    elif experiment == "frontier":
        t = frontier_table(st, run_id)
        out = frontier_verdicts(frontier_summary(t), best_static(st, run_id))
        n = int(st.models(run_id)["width"].iloc[0])
        out.append(plateau_verdict(plateau_table(st, run_id), n))
    elif experiment == "minima":
        out = minima_verdicts(epoch_table(st, run_id))
    elif experiment == "pretrained":
        out = [pretrained_verdict(epoch_table(st, run_id))]
    elif experiment == "size-only":
        out = [size_only_verdict(epoch_table(st, run_id), _start_x0(st, run_id))]
    else:
        raise UsageError(f"unknown experiment {experiment!r}; choose {', '.join(RUNS)}")
    pv = prune_verdict([model_table(st, run_id)])
    return out + ([pv] if pv is not None else [])


def _start_x0(st: Store, run_id: str) -> pd.Series:
    x0 = st.get_run(run_id)["config"]["modifiers"][0]["x0"]
    n = len(st.models(run_id))
    return pd.Series(x0 if isinstance(x0, list) else [x0] * n, dtype=float)


# ------------------------------------------------------------------------------ report
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


def report_sections(store: Store | str, run_ids: list[str], out_dir) -> list:
    """One section per experiment, each with both datasets' figures, tables and verdicts."""
    from widthlab.report import fig_flexible as ff
    from widthlab.report.figures import save
    from widthlab.report.html import Section

    st = store if isinstance(store, Store) else Store(store)
    newest = newest_runs(st, run_ids)
    sections = []
    frontier_widths = {}
    for exp in RUNS:
        found = sorted(((ds, rid) for (ds, e), rid in newest.items() if e == exp),
                       key=lambda x: (x[0] != "mnist", x[0]))
        if not found:
            continue
        figs, tables, verdicts, runs = [], [], [], []
        for ds, rid in found:
            name = display_name(ds)
            runs.append(st.get_run(rid))
            vs = verdicts_for(st, exp, rid)
            verdicts += [dataclasses.replace(v, text=f"{name}: {v.text}") for v in vs]

            def keep(fig, key, caption, _name=name, _rid=rid, _figs=figs):
                _figs.append((f"{_name}: {caption}", save(fig, out_dir, f"{_rid}-{key}")[0]))

            if exp == "convergence":
                t = convergence_table(st, rid)
                keep(ff.convergence(t, name), "convergence",
                     "final width and test accuracy versus the starting x0")
                tables.append((f"{name}: per model", t))
            elif exp == "frontier":
                t = frontier_table(st, rid)
                summ, best = frontier_summary(t), best_static(st, rid)
                for arm in ARMS:
                    if arm in set(summ.arm):
                        keep(ff.frontier(summ[summ.arm == arm], best[best.arm == arm], name,
                                         arm), f"frontier-{arm}",
                             f"converged width and accuracies versus the size penalty "
                             f"({'with' if arm == 'l2' else 'without'} L2)")
                plat = plateau_table(st, rid)
                keep(ff.plateau(plat, name), "plateau",
                     "sum of |output weights| per hidden neuron against the scaler, smallest "
                     "penalty, with and without L2")
                tables.append((f"{name}: medians per arm and penalty", summ))
                if len(best):
                    tables.append((f"{name}: full-width static networks (medians)", best))
                none = summ[(summ.arm == "none")]
                if len(none):
                    frontier_widths[name] = float(
                        none.loc[none.penalty.idxmin(), "final_width"])
                static_id = find_static(st, rid)
                if static_id is not None:
                    runs.append(st.get_run(static_id))
            elif exp == "minima":
                e = epoch_table(st, rid)
                keep(ff.minima(e, name), "minima",
                     "width, size-gradient direction and batch loss per epoch")
                tables.append((f"{name}: last epoch per slope", _last_epoch_summary(e, "slope")))
            elif exp == "pretrained":
                e = epoch_table(st, rid)
                keep(ff.pretrained(e, name), "pretrained",
                     "width and batch loss per epoch after static pretraining")
                tables.append((f"{name}: last epoch per pretraining level",
                               _last_epoch_summary(e, "pretrain")))
            elif exp == "size-only":
                e = epoch_table(st, rid)
                keep(ff.size_only(e, _start_x0(st, rid), name), "size-only",
                     "x0 change and size gradient with frozen weights")
                tables.append((f"{name}: last epoch per slope", _last_epoch_summary(e, "slope")))
        if exp == "frontier" and {"MNIST", "FashionMNIST"} <= set(frontier_widths):
            verdicts.append(width_order_verdict(frontier_widths))
        title, intro = SECTION_TITLES[exp]
        sections.append(Section(title=title, intro=intro, verdicts=verdicts, figures=figs,
                                tables=tables, runs=runs, journal=JOURNAL_BY_EXPERIMENT[exp]))
    return sections


def _last_epoch_summary(e: pd.DataFrame, by: str) -> pd.DataFrame:
    last = e[e.epoch == e.epoch.max()]
    cols = {c: "median" for c in ("width_now", "size_grad", "size_grad_std", "loss_running",
                                  "test_acc") if c in last}
    out = last.groupby(by).agg(cols)
    out["models"] = last.groupby(by).size()
    return out.reset_index()


# ------------------------------------------------------------------------------ CLI
@click.command("flexible")
@click.option("--experiment", type=click.Choice(["all", *EXPERIMENTS]), default="all",
              show_default=True, help="plateau reads the frontier runs; minima also runs the "
                                      "pretrained networks; size-only needs the minima runs.")
@dataset_option
@profile_option("quick: N = 160, 10000 training images, 4-5 epochs, 2-3 replicates "
                "(minutes); full: the journal's N = 500, starts every 25, 11 penalties x 7 "
                "replicates, 30 models x 30 epochs.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the convergence/frontier epochs.")
@device_option
@store_option
@quiet_option
def cli(experiment: str, dataset: str, profile: str, epochs: int | None, device: str,
        store: Path, quiet: bool) -> None:
    """Flexible layers that learn their width with a sigmoid cut-off: convergence from any start,
    the penalty frontier (with/without L2) and its plateau, random slope / random activation /
    pretraining against local minima, and training the size alone.

    Resumes interrupted runs and reuses finished ones. Prints each verdict and the run ids.
    """
    overrides = {} if epochs is None else {"epochs": epochs}
    st = Store(store)
    for name in datasets_for(dataset):
        ids = run(name, profile, experiment=experiment, store=st, progress=not quiet,
                  device=device, **overrides)
        for exp, rid in ids.items():
            if not quiet:
                for v in verdicts_for(st, exp, rid):
                    mark = "holds" if v.holds else "does not hold"
                    click.echo(f"[{display_name(name)} {exp}] {mark}: {v.text}")
            click.echo(rid)
