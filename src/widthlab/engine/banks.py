"""Evaluating and loading a bank of models: :func:`evaluate` (loss, accuracy, streamed neuron
statistics over a split) and :func:`load_bank` (a stored run's trained bank)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from widthlab.data.tensors import DatasetSplits, Split
from widthlab.engine.config import EVAL_ELEMENTS, autocast
from widthlab.engine.stats import RunningCovariance, RunningMoments
from widthlab.errors import UsageError
from widthlab.nn.bank import MLPBank, ModelSpec
from widthlab.store import Store


@dataclass
class EvalResult:
    """Per-model sums over one pass; ``moments``/``cov`` only when statistics were asked."""

    n: int
    loss: Tensor   # (M,) mean loss
    acc: Tensor    # (M,) accuracy in [0, 1]
    moments: RunningMoments | None = None
    cov: RunningCovariance | None = None


@torch.no_grad()
def evaluate(bank: MLPBank, split: Split, *, batch_size: int = 1000, stats: bool = False,
             preact_cov: bool = False, precision: str = "fp32") -> EvalResult:
    """Loss and accuracy of every model on ``split``; optionally stream neuron statistics."""
    dev = bank.device
    loss_sum = torch.zeros(bank.n_models, dtype=torch.float64, device=dev)
    correct = torch.zeros(bank.n_models, dtype=torch.long, device=dev)
    moments = RunningMoments(bank.n_hidden, device=dev) if stats else None
    cov = RunningCovariance(bank.slices, device=dev) if (stats and preact_cov) else None
    # bound the (batch, H) activations and their float64 statistics to ~1 GiB
    batch_size = max(1, min(batch_size, EVAL_ELEMENTS // max(bank.n_hidden, 1)))
    for i in range(0, len(split), batch_size):
        x, y = split.x[i:i + batch_size], split.y[i:i + batch_size]
        with autocast(dev, precision):
            z, a = bank.hidden(x, track=False)
            logits = bank.head(a).float()
        loss_sum += bank.per_model_loss(logits, y).double() * len(y)
        correct += (logits.argmax(-1) == y[:, None]).sum(0)
        if moments is not None:
            moments.update(a)
        if cov is not None:
            cov.update(z)
    n = len(split)
    return EvalResult(n, loss_sum / max(n, 1), correct.double() / max(n, 1), moments, cov)



def n_classes(data: DatasetSplits) -> int:
    """Classes of a dataset: its own ``n_classes`` when it has one, else from its labels."""
    n = getattr(data, "n_classes", None)
    if n:
        return int(n)
    return int(max(int(s.y.max()) for s in (data.train, data.val, data.test) if len(s)) + 1)


def load_bank(store: Store | str, run_id: str, device: str | torch.device = "cpu", *,
              strict_modifiers: bool = True,
              modifiers: Sequence[Callable[[], torch.nn.Module]] = ()) -> MLPBank:
    """The trained bank of a run, rebuilt from its models and its latest checkpoint.

    Raises
    ------
    UsageError
        If the run has no checkpoint or was trained with modifiers (load those through the
        study that defines them).

    A run whose units were removed (sparsifier) is rebuilt with its current widths. Pass
    ``modifiers`` (factories, as to :func:`train`) to rebuild them too, with their stored
    state; without them their state is dropped (``strict_modifiers=False``).
    """
    st = Store.open(store)
    info = st.get_run(run_id)
    if info is None:
        raise UsageError(f"no run {run_id!r} in {st.root}")
    # epoch hooks are described in the same list; they change no parameter
    trained_with = [m for m in info["config"].get("modifiers", []) if "hook" not in m]
    if strict_modifiers and not modifiers and trained_with:
        raise UsageError(f"run {run_id!r} was trained with modifiers; load it through its study")
    found = st.latest_checkpoint(run_id)
    if found is None:
        raise UsageError(f"run {run_id!r} has no checkpoint yet; run its command to train it")
    specs = [ModelSpec.from_dict(row) for row in st.models(run_id).to_dict("records")]
    state, layout = found[1]["bank"], found[1].get("layout")
    bank = MLPBank(specs, state["w0"].shape[1], state["biases.0"].shape[-1],
                   chunk=int(info["config"].get("chunk", 1024)), device=device,
                   widths=None if layout is None else layout["widths"], grown=True)
    if layout is not None:
        bank.unit_ids = layout["unit_ids"].clone()
    if modifiers:
        for make in modifiers:
            bank.add_modifier(make())
        bank.load_state_dict(state)
        return bank
    base = {k: v for k, v in state.items() if not k.startswith("modifiers.")}
    bank.load_state_dict(base, strict=not strict_modifiers or len(base) == len(state))
    return bank
