"""What defines an engine run besides its models: :class:`TrainConfig`, the device, the
fingerprint of everything that changes its numbers, and the seeded minibatch order."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from widthlab.engine.spec import NOT_HASHED, RunSpec, hashed_names, split_config
from widthlab.errors import UsageError
from widthlab.nn.bank import ModelSpec

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
EVAL_ELEMENTS = 2 ** 27  # most (batch x hidden units) values one evaluation batch may hold


# NOT_HASHED (from widthlab.engine.spec): a field that changes no number, out of the run id
IF_SHRINKS = {"hashed": "shrinks"}    # hashed only when a modifier kills units


@dataclass
class TrainConfig:
    """Everything that defines a run besides its models (defaults follow the journal).

    Every field enters the run's :class:`~widthlab.engine.spec.RunSpec` key (:func:`bank_spec`)
    unless its metadata says ``hashed=False`` (where the run trains, how evaluation is batched,
    its label, what the last checkpoint keeps: the spec's ``placement``) or
    ``hashed="shrinks"`` (only with a modifier that kills units); :meth:`hashed_fields` lists
    them.
    """

    dataset: str = "mnist"          # mnist | fashion-mnist (or the name of splits passed in)
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3                # models may override it (ModelSpec.lr)
    optimizer: str = "adam"         # adam | adamax | sgd
    momentum: float = 0.0           # sgd only
    data_seed: int = 0              # train/val split and minibatch order
    val_size: int = 5000
    train_size: int | None = None   # use only the first N training samples (quick runs)
    device: str = field(default="auto", metadata=NOT_HASHED)  # cpu | cuda | auto
    precision: str = "fp32"         # fp32 | bf16 (autocast; master weights stay fp32)
    eval_batch_size: int = field(default=1000, metadata=NOT_HASHED)
    eval_splits: tuple[str, ...] = ("val", "test")
    eval_epochs: str = "all"        # evaluate eval_splits after "all" epochs or the "last" only
    stats_split: str = "train"      # split over which neuron statistics are streamed
    stats_epochs: str | tuple[int, ...] = "last"   # "last", "all", "none" or epoch numbers
    preact_cov: bool = False        # also stream the pre-activation covariance (PCA)
    chunk: int = 1024               # hidden units per first-layer GEMM call
    study: str = field(default="train", metadata=NOT_HASHED)  # label stored with the run
    record_batch_loss: bool = False  # store every minibatch loss per model and epoch
    init_from: str | None = None    # start from this finished run's weights (same models)
    # with a modifier that kills units (SparsifierGate): when to act on dead units, "epoch"
    # (after each epoch), N (every N steps) or None (never); and how: "remove" them for real
    # or "mask" them (same numbers, full cost). Ignored, and out of the run id, otherwise.
    shrink_every: str | int | None = field(default="epoch", metadata=IF_SHRINKS)
    shrink_mode: str = field(default="remove", metadata=IF_SHRINKS)
    # a finished run keeps a weights-only checkpoint (enough for load_bank, PCA, importance and
    # the frontier); True keeps the optimizer state too. Out of the run id: no number changes.
    keep_optimizer: bool = field(default=False, metadata=NOT_HASHED)

    @classmethod
    def hashed_fields(cls, shrinks: bool = False) -> list[str]:
        """The fields that enter the run id (``shrinks``: a modifier kills units)."""
        return hashed_names(cls, shrinks)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise UsageError("batch sizes must be >= 1")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be a finite number >= 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise UsageError(f"device must be cpu, cuda or auto, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("device 'cuda' asked for but no CUDA GPU is visible; "
                             "use --device cpu (or auto)")
        if isinstance(self.stats_epochs, str):
            if self.stats_epochs not in ("last", "all", "none"):
                raise UsageError("stats_epochs must be 'last', 'all', 'none' or epoch numbers")
        else:
            self.stats_epochs = tuple(int(e) for e in self.stats_epochs)
        self.eval_splits = tuple(self.eval_splits)
        if self.eval_epochs not in ("all", "last"):
            raise UsageError(f"eval_epochs must be 'all' or 'last', got {self.eval_epochs!r}")
        if isinstance(self.shrink_every, str) and self.shrink_every.isdigit():
            self.shrink_every = int(self.shrink_every)
        if self.shrink_every in ("none", "None"):
            self.shrink_every = None
        if not (self.shrink_every is None or self.shrink_every == "epoch"
                or (isinstance(self.shrink_every, int) and not isinstance(self.shrink_every, bool)
                    and self.shrink_every >= 1)):
            raise UsageError(f"shrink_every must be 'epoch', a number of steps >= 1 or None, "
                             f"got {self.shrink_every!r}")
        if self.shrink_mode not in ("remove", "mask"):
            raise UsageError(f"shrink_mode must be 'remove' or 'mask', got {self.shrink_mode!r}")
        for s in (*self.eval_splits, self.stats_split):
            if s not in ("train", "val", "test"):
                raise UsageError(f"unknown split {s!r}; choose train, val or test")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config stored with a run (``Store.get_run(id)["config"]``), rebuilt: keys that
        are not fields (``modifiers``, analysis settings) are ignored, JSON lists become
        tuples."""
        known = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        if str(kw.get("device", "auto")).startswith("cuda") and not torch.cuda.is_available():
            kw["device"] = "auto"  # a GPU run read back on a CPU machine
        return cls(**kw)

    def resolved_device(self) -> torch.device:
        return resolve_device(self.device)

    def wants_stats(self, epoch: int) -> bool:
        if self.stats_epochs == "none":
            return False
        if self.stats_epochs == "all":
            return True
        if self.stats_epochs == "last":
            return epoch == self.epochs
        return epoch in self.stats_epochs


@contextlib.contextmanager
def flush_denormals(device: torch.device):
    """Flush float32 denormals to zero while a run trains on the CPU (restored afterwards).

    A flexible cut-off scales the neurons far right of ``x0`` by ``sigmoid(k (x0 - i))``, down
    to ~1e-40: denormal activations and gradients, on which x86 GEMMs run 3-5x slower (a
    flexible bank of 5 x 256 units took 3.5x the step time of the static one, 1.2x with this).
    Only values below 1.2e-38 change, to zero.
    """
    on = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if on:
            torch.set_flush_denormal(False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the GPU when one is visible, else the CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def bank_spec(cfg: TrainConfig, specs: Sequence[ModelSpec], modifiers: Sequence[dict],
              data_id: str, *, dataset: str | None = None, shrinks: bool = False,
              code: str = "") -> RunSpec:
    """The :class:`~widthlab.engine.spec.RunSpec` of an engine run: ``cfg``'s hashed fields,
    the models, the modifiers' and hooks' descriptions, the data's identity and ``code``
    (:func:`widthlab.engine.identity.engine_code_hash`); ``cfg``'s other fields are its
    placement.

    ``shrinks``: whether a modifier kills units; if not, the shrink settings change nothing
    and stay out of the hash. ``dataset``: the name in the id (default ``cfg.dataset``).
    """
    hashed, placed = split_config(cfg, shrinks)
    label = placed.pop("study")
    return RunSpec("bank", label=label, dataset=dataset or cfg.dataset, data=data_id,
                   models=[s.to_dict() for s in specs], train=hashed,
                   modifiers=list(modifiers), code=code, placement=placed)


def fingerprint(cfg: TrainConfig, specs: Sequence[ModelSpec], modifiers: Sequence[dict],
                data_id: str, *, shrinks: bool = False, code: str = "") -> str:
    """Hash of everything that changes a run's numbers: :meth:`RunSpec.key
    <widthlab.engine.spec.RunSpec.key>` of :func:`bank_spec`."""
    return bank_spec(cfg, specs, modifiers, data_id, shrinks=shrinks, code=code).key()


def describe_hook(hook: Callable) -> object:
    """What identifies a hook in the fingerprint: its ``describe()`` or its qualified name
    (never ``repr``, which holds a memory address)."""
    if hasattr(hook, "describe"):
        return hook.describe()
    name = getattr(hook, "__qualname__", None) or type(hook).__qualname__
    return f"{getattr(hook, '__module__', '')}.{name}"


def epoch_order(n: int, data_seed: int, epoch: int, device: torch.device) -> Tensor:
    """The permutation of the training split for ``epoch`` (depends on nothing else)."""
    g = torch.Generator().manual_seed(int(data_seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).to(device)



def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=PRECISIONS[precision],
                          enabled=precision != "fp32")

