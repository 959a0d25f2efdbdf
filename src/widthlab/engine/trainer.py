"""The training engine: one minibatch stream, many models, resumable, with neuron statistics.

    from widthlab.engine import TrainConfig, train
    from widthlab.nn import ModelSpec
    specs = [ModelSpec((w,), seed=s) for w in (64, 128, 256) for s in range(3)]
    run_id = train(specs, TrainConfig(dataset="mnist", epochs=3), store="widthlab-runs")

What one epoch does, for every model of the bank at once:

1. shuffle the training split with a generator seeded by ``(data_seed, epoch)`` (so a resumed
   run sees exactly the batches it would have seen), step through it in minibatches, and sum
   the per-model losses (each model's gradient is its own);
2. check every model's loss and parameters: a NaN or inf marks the model failed, zeroes it and
   its optimizer state, and takes it out of the loss (its neighbours never see it);
3. evaluate loss and accuracy on the validation and test splits, and on the requested epochs
   stream per-neuron statistics over a split (mean/std after ReLU, dead mask, optionally the
   pre-activation covariance for PCA);
4. write a checkpoint (temporary file, then rename) and commit the epoch's metrics, arrays and
   the checkpoint's row in one SQLite transaction.

Sparsifier gates (:class:`widthlab.nn.gated.SparsifierGate`) kill first-layer units. At the
cadence ``TrainConfig.shrink_every`` (after every epoch by default, or every N steps) the engine
removes the dead units for real (:meth:`MLPBank.shrink_`, the optimizer state carried over by
:meth:`BankOptimizer.shrunk`), so they stop costing compute, or with ``shrink_mode="mask"``
only switches them off. Checkpoints record every model's current width; a resumed run rebuilds
the shrunk bank exactly.

A run is identified by a fingerprint of everything that changes its numbers (data, models,
hyper-parameters, precision) and a hash of the code that computes them: the engine's modules,
and the modules of its modifiers and hooks (:mod:`widthlab.engine.identity`). Calling
:func:`train` again with the same arguments resumes from the newest checkpoint, or returns at
once if the run is done. The engine draws nothing: it reports progress to a callback
(:class:`~widthlab.engine.events.ProgressEvent`) and hands hooks an
:class:`~widthlab.engine.events.EpochContext`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from widthlab import __version__
from widthlab.data.tensors import DatasetSplits, Split, load_splits
from widthlab.engine.events import EpochContext, Reporter, progress_callback
from widthlab.engine.identity import engine_code_hash
from widthlab.engine.optim import BankOptimizer
from widthlab.engine.stats import RunningCovariance, RunningMoments
from widthlab.errors import UsageError
from widthlab.nn.bank import MLPBank, ModelSpec
from widthlab.store import ArrayRow, MetricRow, Store
from widthlab.store.claims import claimed

# Part of the stored code version string; run identity comes from the code hash itself
# (widthlab.engine.identity), so nothing needs bumping by hand.
ENGINE_VERSION = 2
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
EVAL_ELEMENTS = 2 ** 27  # most (batch x hidden units) values one evaluation batch may hold


@dataclass
class TrainConfig:
    """Everything that defines a run besides its models (defaults follow the journal)."""

    dataset: str = "mnist"          # mnist | fashion-mnist (or the name of splits passed in)
    epochs: int = 1
    batch_size: int = 128
    lr: float = 1e-3                # models may override it (ModelSpec.lr)
    optimizer: str = "adam"         # adam | adamax | sgd
    momentum: float = 0.0           # sgd only
    data_seed: int = 0              # train/val split and minibatch order
    val_size: int = 5000
    train_size: int | None = None   # use only the first N training samples (quick runs)
    device: str = "auto"            # cpu | cuda | auto
    precision: str = "fp32"         # fp32 | bf16 (autocast; master weights stay fp32)
    eval_batch_size: int = 1000
    eval_splits: tuple[str, ...] = ("val", "test")
    eval_epochs: str = "all"        # evaluate eval_splits after "all" epochs or the "last" only
    stats_split: str = "train"      # split over which neuron statistics are streamed
    stats_epochs: str | tuple[int, ...] = "last"   # "last", "all", "none" or epoch numbers
    preact_cov: bool = False        # also stream the pre-activation covariance (PCA)
    chunk: int = 1024               # hidden units per first-layer GEMM call
    study: str = "train"            # label stored with the run
    record_batch_loss: bool = False  # store every minibatch loss per model and epoch
    init_from: str | None = None    # start from this finished run's weights (same models)
    # with a modifier that kills units (SparsifierGate): when to act on dead units, "epoch"
    # (after each epoch), N (every N steps) or None (never); and how: "remove" them for real
    # or "mask" them (same numbers, full cost). Ignored, and out of the run id, otherwise.
    shrink_every: str | int | None = "epoch"
    shrink_mode: str = "remove"
    # a finished run keeps a weights-only checkpoint (enough for load_bank, PCA, importance and
    # the frontier); True keeps the optimizer state too. Out of the run id: no number changes.
    keep_optimizer: bool = False

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


def fingerprint(cfg: TrainConfig, specs: Sequence[ModelSpec], modifiers: Sequence[dict],
                data_id: str, *, shrinks: bool = False, code: str = "") -> str:
    """Hash of everything that changes a run's numbers (not the device or progress settings).

    ``shrinks``: whether a modifier kills units; if not, the shrink settings change nothing
    and stay out of the hash. ``code``: the code hash of the engine, modifiers and hooks
    (:func:`widthlab.engine.identity.engine_code_hash`).
    """
    c = asdict(cfg)
    for key in ("device", "eval_batch_size", "keep_optimizer"):
        c.pop(key, None)
    if not shrinks:
        for key in ("shrink_every", "shrink_mode"):
            c.pop(key)
    blob = json.dumps({"code": code, "config": c, "data": data_id,
                       "models": [s.to_dict() for s in specs], "modifiers": list(modifiers)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _describe_hook(hook: Callable) -> object:
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
        with _autocast(dev, precision):
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


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=PRECISIONS[precision],
                          enabled=precision != "fp32")


@dataclass
class _EpochSums:
    """Per-model sums over one epoch's minibatches."""

    loss: Tensor       # (M,) float64 sum of batch mean losses x batch sizes
    correct: Tensor    # (M,) correct predictions
    finite: Tensor     # (M,) whether every loss was finite
    n: int             # training samples
    batch_losses: list[Tensor] = field(default_factory=list)

    @classmethod
    def zeros(cls, n_models: int, device: torch.device, n: int) -> _EpochSums:
        return cls(torch.zeros(n_models, dtype=torch.float64, device=device),
                   torch.zeros(n_models, dtype=torch.long, device=device),
                   torch.ones(n_models, dtype=torch.bool, device=device), n)


@dataclass
class _State:
    """What a checkpoint holds besides the bank and the optimizer."""

    epoch: int = 0
    alive: list[bool] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    shrink_s: float = 0.0           # part of train_s spent removing units


class Engine:
    """Trains one bank of models on one dataset; see :func:`train` for the usual entry point.

    Parameters
    ----------
    specs : sequence of ModelSpec
    cfg : TrainConfig
    store : Store or path
    modifiers : callables returning a fresh modifier each (the bank is rebuilt on resume)
    data : DatasetSplits, optional
        Use these splits instead of loading ``cfg.dataset`` (tests, custom data).
    """

    def __init__(self, specs: Sequence[ModelSpec], cfg: TrainConfig,
                 store: Store | str = "widthlab-runs", *,
                 modifiers: Sequence[Callable[[], torch.nn.Module]] = (),
                 data: DatasetSplits | None = None, progress: object = None,
                 hooks: Sequence[Callable] = ()):
        self.specs, self.cfg = list(specs), cfg
        self.store = Store.open(store)
        self.device = cfg.resolved_device()
        self.progress = progress_callback(progress)
        if data is None:
            data = load_splits(cfg.dataset, val_size=cfg.val_size, seed=cfg.data_seed)
        if cfg.train_size is not None:  # "at most N": a smaller dataset is used whole
            data = data.head(min(cfg.train_size, len(data.train)))
        self.data = data.to(self.device)
        self._modifier_factories = list(modifiers)
        self._build()
        self.hooks = list(hooks)
        if cfg.init_from is not None:
            self._init_from(cfg.init_from)
        mods = [m.describe() for m in self.bank.modifiers]
        mods += [{"hook": _describe_hook(h)} for h in self.hooks]
        data_id = getattr(data, "content_id", None) or \
            f"{data.name}:{len(data.train)}:{len(data.val)}:{len(data.test)}"
        # whether a modifier kills units (then shrink_every/shrink_mode act and are hashed)
        self.shrinks = any(m.alive_units() is not None for m in self.bank.modifiers
                           if hasattr(m, "alive_units"))
        label = cfg.study.replace(":", ".")  # "study:experiment" -> a valid id
        code = engine_code_hash(list(self.bank.modifiers), self.hooks)
        fp = fingerprint(cfg, self.specs, mods, data_id, shrinks=self.shrinks, code=code)
        self.run_id = f"{label}-{data.name}-{fp[:12]}"
        self.modifier_config = mods
        self.state = _State(alive=[True] * self.bank.n_models)

    def _build(self, widths: Sequence[int] | None = None) -> None:
        """(Re)create the bank, its modifiers and the optimizer; ``widths``: a shrunk layout."""
        cfg = self.cfg
        self.bank = MLPBank(self.specs, self.data.train.x.shape[1], _n_classes(self.data),
                            chunk=cfg.chunk, device=self.device, widths=widths,
                            grown=True)  # a checkpoint of a grown bank: widths above specs
        self.bank.compute_dtype = PRECISIONS[cfg.precision]
        for make in self._modifier_factories:
            self.bank.add_modifier(make())
        self.opt = BankOptimizer(self.bank, lr=cfg.lr, kind=cfg.optimizer,
                                 momentum=cfg.momentum)
        # modifiers that add units (widthlab.nn.growth.GrowingGate), called by _grow
        self._growers = [m for m in self.bank.modifiers if getattr(m, "grows", False)]

    def shrink(self) -> int:
        """Act on the units the modifiers call dead: remove them (``shrink_mode="remove"``,
        optimizer state carried over) or mask them. Returns how many units were dead."""
        keep = None
        for mod in self.bank.modifiers:
            alive = mod.alive_units()
            if alive is not None:
                keep = alive if keep is None else keep & alive
        if keep is None:
            return 0
        n_dead = int((~keep).sum())  # the one device sync of a shrink check
        if n_dead == 0:
            return 0
        if self.cfg.shrink_mode == "mask":
            for mod in self.bank.modifiers:
                if mod.alive_units() is not None:
                    mod.mask_(keep)
            return n_dead
        done = self.bank.shrink_(keep)
        self.opt = self.opt.shrunk(self.bank, done.kept)
        return n_dead

    def _timed_shrink(self) -> None:
        t = time.perf_counter()
        self.shrink()
        self.state.shrink_s += time.perf_counter() - t

    # ---- growth (widthlab.nn.growth): modifiers that add units every `mod.every` steps
    def _grow(self, order: Tensor, end: int, step: int) -> None:
        """Let each growth modifier due at ``step`` propose units from the recent batches (the
        last ``mod.window`` minibatches of this epoch's ``order`` up to ``end``) and add them;
        the optimizer state follows (zero for the new units)."""
        for mod in self._growers:
            if step % mod.every == 0:
                idx = order[max(0, end - mod.window * self.cfg.batch_size):end]
                x, y = self.data.train.x.index_select(0, idx), self.data.train.y[idx]
                end = self.cfg.epochs * math.ceil(len(self.data.train) / self.cfg.batch_size)
                plan = mod.propose(self.bank, x, y, step, self.state.alive, end=end)
                if plan is not None:
                    done = self.bank.grow_(*plan.args(), ids=plan.ids)
                    mod.committed(plan)
                    self.opt = self.opt.grown(self.bank, done)

    def _layout_state(self) -> dict | None:
        """The bank's current widths and original unit indices (None: never shrunk/grown)."""
        return self.bank.layout_state()

    # ------------------------------------------------------------------ run
    def run(self, until: int | None = None) -> str:
        """Train (or resume, or skip if done); returns the run id.

        ``until``: stop after this epoch without finishing the run; a later ``run`` on the same
        engine continues in memory (benchmarks time epochs of several engines in turn).
        While another live process trains the same run in the same store, this waits for it
        and then reuses or resumes its work (:mod:`widthlab.store.claims`).
        """
        with claimed(self.store, self.run_id):
            return self._run(until)

    def _run(self, until: int | None) -> str:
        info = self.store.get_run(self.run_id)
        if info is not None and info["status"] == "done":
            # a finished run whose epochs or checkpoint were lost is rolled back and completed
            problems = self.store.check([self.run_id], integrity=False)
            if not problems:
                return self.run_id
            self.store.repair(problems)
            info = self.store.get_run(self.run_id)
        if info is None:
            self.store.create_run(
                self.run_id, study=self.cfg.study, dataset=self.data.name,
                config={**asdict(self.cfg), "modifiers": self.modifier_config,
                        "device": str(self.device), "data": self.data.describe()},
                models=[s.to_dict() for s in self.specs], seed=self.cfg.data_seed,
                device=str(self.device), precision=self.cfg.precision,
                code_version=f"widthlab {__version__} engine {ENGINE_VERSION}")
        elif not (getattr(self, "_in_memory", False)
                  and info["epochs_done"] == self.state.epoch):
            self._resume()
        self._in_memory = True
        last = self.cfg.epochs if until is None else max(0, min(until, self.cfg.epochs))
        steps_per_epoch = math.ceil(len(self.data.train) / self.cfg.batch_size)
        report = Reporter(self.progress, self.run_id,
                           (last - self.state.epoch) * steps_per_epoch, self.cfg.epochs)
        with flush_denormals(self.device):
            while self.state.epoch < last:
                self._epoch(self.state.epoch + 1, report.step)
                report.epoch(self.state.epoch)
        report.done(self.state.epoch)
        if self.state.epoch >= self.cfg.epochs:
            self.store.finish_run(self.run_id, "done", timings=self._timings())
        return self.run_id

    def _resume(self) -> None:
        found = self.store.latest_checkpoint(self.run_id)
        if found is None:
            self.store.rollback(self.run_id, 0)
            return
        epoch, ckpt = found
        layout = ckpt.get("layout")
        if layout is not None:  # a shrunk bank: rebuild its layout before loading
            self._build(layout["widths"])
            self.bank.unit_ids = layout["unit_ids"].clone()
        self.bank.load_state_dict(ckpt["bank"])
        if "optimizer" in ckpt:  # a final, weights-only checkpoint has nothing left to train
            self.opt.load_state_dict(ckpt["optimizer"])
        self.state = _State(**ckpt["state"])
        self.store.rollback(self.run_id, epoch)

    def _init_from(self, run_id: str) -> None:
        """Copy the layer weights of a finished run with the same architectures (modifier
        parameters keep their own initialisation)."""
        info = self.store.get_run(run_id)
        if info is None or info["status"] != "done":
            raise UsageError(f"init_from run {run_id!r} is not a finished run in "
                             f"{self.store.root}; train it first")
        src = load_bank(self.store, run_id, device=self.device, strict_modifiers=False)
        if [tuple(a) for a in src.archs] != [s.hidden for s in self.specs]:
            raise UsageError(f"init_from run {run_id!r} has models "
                             f"{[tuple(a) for a in src.archs]}, this run needs "
                             f"{[s.hidden for s in self.specs]}; use a run with the same "
                             "models in the same order")
        with torch.no_grad():
            for m in range(self.bank.n_models):
                mine = [v for n, v, _ in self.bank.model_params(m) if n.startswith("layers.")]
                theirs = [v for n, v, _ in src.model_params(m) if n.startswith("layers.")]
                for a, b in zip(mine, theirs, strict=True):
                    a.copy_(b)

    def _timings(self) -> dict:
        s = self.state
        out = {"train_s": round(s.train_s, 3), "eval_s": round(s.eval_s, 3), "steps": s.steps,
               "ms_per_step": round(1e3 * s.train_s / max(s.steps, 1), 3)}
        if self.shrinks:
            out["shrink_s"] = round(s.shrink_s, 3)
        return out

    def _epoch(self, epoch: int, advance: Callable[[int], None]) -> None:
        """Train one epoch, evaluate, and commit its rows and checkpoint in one transaction."""
        sums = self._train_steps(epoch, advance)
        t1 = time.perf_counter()
        failures = self._check_models(sums.finite, epoch)
        if self.shrinks and self.cfg.shrink_every == "epoch":
            # after the failure check: a failed model's zeroed gates take all its units away;
            # timed as training
            t_shrink = time.perf_counter()
            self._timed_shrink()
            spent = time.perf_counter() - t_shrink
            self.state.train_s += spent
            t1 += spent
        live = [m for m in range(self.bank.n_models) if self.state.alive[m]]
        metrics, arrays = self._train_rows(epoch, sums, live)
        for rows in (self._modifier_rows(epoch), self._eval_rows(epoch, live),
                     self._hook_rows(epoch)):
            metrics += rows[0]
            arrays += rows[1]
        self.state.eval_s += time.perf_counter() - t1
        self.state.epoch = epoch
        self._commit(epoch, metrics, arrays, failures)

    def _train_steps(self, epoch: int, advance: Callable[[int], None]) -> _EpochSums:
        """The epoch's minibatch steps over the seeded order; per-model running sums."""
        cfg, bank, dev = self.cfg, self.bank, self.device
        train = self.data.train
        alive = torch.tensor(self.state.alive, dtype=torch.float32, device=dev)
        sums = _EpochSums.zeros(bank.n_models, dev, len(train))
        order = epoch_order(len(train), cfg.data_seed, epoch, dev)
        t0 = time.perf_counter()
        n_steps = 0
        every = cfg.shrink_every if (self.shrinks and isinstance(cfg.shrink_every, int)) else 0
        for i in range(0, len(train), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, y = train.x.index_select(0, idx), train.y.index_select(0, idx)
            for mod in bank.modifiers:
                mod.before_step(self.state.steps + n_steps)
            with _autocast(dev, cfg.precision):
                logits = bank(x).float()  # (B, M, C)
            ce = bank.per_model_loss(logits, y)  # (M,)
            pen = bank.penalty()
            loss = ce if pen is None else ce + pen.float()
            bank.zero_grad()
            (loss * alive).sum().backward()
            for mod in bank.modifiers:
                mod.after_backward()
            self.opt.step()
            with torch.no_grad():
                if cfg.record_batch_loss:
                    sums.batch_losses.append(ce.detach().clone())
                sums.loss += ce.double() * len(y)
                sums.correct += (logits.argmax(-1) == y[:, None]).sum(0)
                sums.finite &= torch.isfinite(loss)
            n_steps += 1
            if every and (self.state.steps + n_steps) % every == 0:
                self._timed_shrink()
            if self._growers:  # growth (widthlab.nn.growth): units added at their cadence
                self._grow(order, i + cfg.batch_size, self.state.steps + n_steps)
            advance(1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        self.state.train_s += time.perf_counter() - t0
        self.state.steps += n_steps
        return sums

    @staticmethod
    def _train_rows(epoch: int, sums: _EpochSums, live: list[int]
                    ) -> tuple[list[MetricRow], list[ArrayRow]]:
        """Running train loss and accuracy, and the batch losses when recorded."""
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        run_loss = (sums.loss / sums.n).tolist()
        run_acc = (sums.correct.double() / sums.n).tolist()
        for m in live:
            metrics += [MetricRow(m, epoch, "train", "loss_running", run_loss[m]),
                        MetricRow(m, epoch, "train", "acc_running", run_acc[m])]
        if sums.batch_losses:
            per_batch = torch.stack(sums.batch_losses).double().cpu().numpy()  # (steps, M)
            for m in live:
                col = per_batch[:, m]
                arrays.append(ArrayRow(m, epoch, "batch_loss", col.copy()))
                metrics += [MetricRow(m, epoch, "train", f"batch_loss_{k}", float(f(col)))
                            for k, f in (("min", np.min), ("median", np.median),
                                         ("max", np.max))]
        return metrics, arrays

    def _modifier_rows(self, epoch: int) -> tuple[list[MetricRow], list[ArrayRow]]:
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        for mod in self.bank.modifiers:
            for m, name, value in mod.epoch_records():
                if self.state.alive[m]:
                    if np.ndim(value) == 0:
                        metrics.append(MetricRow(m, epoch, "train", name, float(value)))
                    else:
                        arrays.append(ArrayRow(m, epoch, name, np.asarray(value)))
        return metrics, arrays

    def _eval_rows(self, epoch: int, live: list[int]) -> tuple[list[MetricRow], list[ArrayRow]]:
        """Loss and accuracy on the evaluated splits; neuron statistics when asked."""
        cfg = self.cfg
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        splits = list(cfg.eval_splits) if (cfg.eval_epochs == "all"
                                           or epoch == cfg.epochs) else []
        want_stats = cfg.wants_stats(epoch)
        if want_stats and cfg.stats_split not in splits:
            splits.append(cfg.stats_split)
        for name in splits:
            stats = want_stats and name == cfg.stats_split
            res = evaluate(self.bank, self.data.split(name), batch_size=cfg.eval_batch_size,
                           stats=stats, preact_cov=stats and cfg.preact_cov,
                           precision=cfg.precision)
            loss_l, acc_l = res.loss.tolist(), res.acc.tolist()
            for m in live:
                metrics += [MetricRow(m, epoch, name, "loss", loss_l[m]),
                            MetricRow(m, epoch, name, "acc", acc_l[m])]
            if stats:
                metrics_s, arrays_s = self._neuron_arrays(res, epoch, live, name)
                metrics += metrics_s
                arrays += arrays_s
        return metrics, arrays

    def _hook_rows(self, epoch: int) -> tuple[list[MetricRow], list[ArrayRow]]:
        metrics: list[MetricRow] = []
        arrays: list[ArrayRow] = []
        ctx = EpochContext(epoch, self.bank, self.cfg, self.data, tuple(self.state.alive))
        for hook in self.hooks:
            for row in hook(ctx) or ():
                if self.state.alive[row.model]:
                    (arrays if isinstance(row, ArrayRow) else metrics).append(row)
        return metrics, arrays

    def _commit(self, epoch: int, metrics: list[MetricRow], arrays: list[ArrayRow],
                failures: list[tuple[int, int, str]]) -> None:
        """Write the checkpoint (weights only after the last epoch unless asked), then commit
        the epoch's rows with it in one transaction."""
        ckpt = {"bank": self.bank.state_dict(), "state": asdict(self.state)}
        if epoch < self.cfg.epochs or self.cfg.keep_optimizer:  # the run can still resume
            ckpt["optimizer"] = self.opt.state_dict()
        layout = self._layout_state()
        if layout is not None:
            ckpt["layout"] = layout
        path = self.store.save_checkpoint(self.run_id, epoch, ckpt)
        self.store.commit_epoch(self.run_id, epoch, metrics=metrics, arrays=arrays,
                                checkpoint=path, failures=failures, timings=self._timings())

    def _check_models(self, finite_loss: Tensor, epoch: int) -> list[tuple[int, int, str]]:
        """Mark models whose loss or parameters went non-finite; zero them."""
        failures = []
        finite_loss = finite_loss.tolist()
        for m in range(self.bank.n_models):
            if not self.state.alive[m]:
                continue
            reason = None
            if not finite_loss[m]:
                reason = "loss became NaN or inf"
            elif not all(bool(torch.isfinite(p).all()) for p in self.opt.model_tensors[m]):
                reason = "parameters became NaN or inf"
            if reason:
                lr = self.specs[m].lr if self.specs[m].lr is not None else self.cfg.lr
                failures.append((m, epoch, f"{reason} during epoch {epoch} at lr {lr:g} "
                                           "(lower the learning rate)"))
                self.state.alive[m] = False
                self.opt.reset_model(m)
        return failures

    def _neuron_arrays(self, res: EvalResult, epoch: int, live: list[int], split: str):
        mom = res.moments
        mean = mom.mean.cpu().numpy()
        std = mom.std(ddof=0).cpu().numpy()
        active = mom.active.cpu().numpy()
        metrics, arrays = [], []
        for m in live:
            a, b = self.bank.slices[m]
            arrays += [ArrayRow(m, epoch, "act_mean", mean[a:b].copy()),
                       ArrayRow(m, epoch, "act_std", std[a:b].copy()),
                       ArrayRow(m, epoch, "dead", (~active[a:b]).astype(np.uint8))]
            metrics += [MetricRow(m, epoch, split, "dead", float((~active[a:b]).sum())),
                        MetricRow(m, epoch, split, "total_std", float(std[a:b].sum()))]
            if res.cov is not None:
                arrays += [ArrayRow(m, epoch, "pre_mean", res.cov.mean(m).cpu().numpy()),
                           ArrayRow(m, epoch, "pre_cov", res.cov.covariance(m).cpu().numpy())]
        return metrics, arrays


def train(specs: Sequence[ModelSpec], cfg: TrainConfig | None = None,
          store: Store | str = "widthlab-runs", *,
          modifiers: Sequence[Callable[[], torch.nn.Module]] = (),
          data: DatasetSplits | None = None, progress: object = None,
          hooks: Sequence[Callable] = ()) -> str:
    """Train ``specs`` together (or resume / skip a run with the same fingerprint).

    ``hooks`` are callables ``hook(ctx: EpochContext) -> iterable of MetricRow/ArrayRow`` run
    after each epoch's evaluation; their rows are stored in the epoch's transaction (a hook's
    ``describe()`` and its module's code enter the fingerprint). ``progress``: a callback
    receiving :class:`~widthlab.engine.events.ProgressEvent` (e.g. from :mod:`widthlab.ui`).
    Returns the run id; read results with ``Store.open(store).metrics(run_id)`` and friends.
    """
    return Engine(specs, cfg or TrainConfig(), store, modifiers=modifiers, data=data,
                  progress=progress, hooks=hooks).run()


def _n_classes(data: DatasetSplits) -> int:
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
