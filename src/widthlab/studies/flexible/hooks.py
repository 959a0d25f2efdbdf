"""Epoch hooks of the flexible-layer study: what it stores beyond the engine's metrics.

Each hook is called after an epoch's evaluation as ``hook(ctx)`` with a
:class:`~widthlab.engine.events.EpochContext` and returns metric/array rows; its
``describe()`` and this module's code enter the run's identity.

Example::

    from widthlab.studies.flexible.hooks import LastEpochProbe

    train(specs, cfg, store, modifiers=[make_cutoff], hooks=[LastEpochProbe(train_acc=True)])
"""

from __future__ import annotations

import torch

from widthlab.engine import evaluate
from widthlab.engine.events import EpochContext
from widthlab.nn.bank import MLPBank
from widthlab.nn.flexible import (
    PRUNE_THRESHOLD,
    FlexibleCutoff,
    FlexibleMLP,
    cutoff_scale,
    random_activation,
)
from widthlab.store import ArrayRow, MetricRow


def _cutoff(bank: MLPBank) -> FlexibleCutoff | None:
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
    def __call__(self, ctx: EpochContext) -> list:
        if not ctx.last:
            return []
        bank, epoch, rows = ctx.bank, ctx.epoch, []
        if self.train_acc:
            res = evaluate(bank, ctx.data.train, batch_size=ctx.cfg.eval_batch_size,
                           precision=ctx.cfg.precision)
            for m, (acc, loss) in enumerate(zip(res.acc.tolist(), res.loss.tolist(),
                                                strict=True)):
                rows += [MetricRow(m, epoch, "train", "acc", acc),
                         MetricRow(m, epoch, "train", "loss", loss)]
        cut = _cutoff(bank)
        for m in range(bank.n_models):
            if self.out_weights:
                head = dict((n, v) for n, v, _ in bank.model_params(m))["layers.1.weight"]
                rows.append(ArrayRow(m, epoch, "out_abs",
                                     head.abs().sum(0).double().cpu().numpy()))  # (N,)
            if self.prune and cut is not None and len(bank.specs[m].hidden) == 1:
                rows += _pruned_rows(bank, m, ctx)
        return rows


def _pruned_rows(bank: MLPBank, m: int, ctx: EpochContext) -> list[MetricRow]:
    """Test accuracy and width of model ``m`` pruned to the neurons left of its cut-off."""
    test = ctx.data.test
    pruned = FlexibleMLP.from_bank(bank, m).prune()
    correct = 0
    for i in range(0, len(test), 2000):
        logits = pruned(test.x[i:i + 2000])  # (b, C)
        correct += int((logits.argmax(1) == test.y[i:i + 2000]).sum())
    return [MetricRow(m, ctx.epoch, "test", "acc_pruned", correct / max(len(test), 1)),
            MetricRow(m, ctx.epoch, "test", "pruned_width", float(pruned[0].out_features))]


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

    def __call__(self, ctx: EpochContext) -> list:
        bank, epoch = ctx.bank, ctx.epoch
        cut = _cutoff(bank)
        if cut is None:
            return []
        x = ctx.data.train.x[:self.samples]
        y = ctx.data.train.y[:self.samples]
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
