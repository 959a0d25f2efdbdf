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

A run is identified by its run spec (:class:`~widthlab.engine.spec.RunSpec`, built by
:func:`~widthlab.engine.config.bank_spec`): a hash of everything that changes its numbers (data,
models, hyper-parameters, precision, modifiers and hooks), never of where it runs, and of the
code that computes them: the engine's modules,
and the modules of its modifiers and hooks (:mod:`widthlab.engine.identity`). Calling
:func:`train` again with the same arguments resumes from the newest checkpoint, or returns at
once if the run is done. The engine draws nothing: it reports progress to a callback
(:class:`~widthlab.engine.events.ProgressEvent`) and hands hooks an
:class:`~widthlab.engine.events.EpochContext`.
"""


from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from widthlab import __version__
from widthlab.data.tensors import DatasetSplits, load_splits
from widthlab.engine.bank_rows import BankRows, EpochSums
from widthlab.engine.banks import EvalResult, evaluate, load_bank, n_classes
from widthlab.engine.config import (
    PRECISIONS,
    TrainConfig,
    autocast,
    bank_spec,
    describe_hook,
    epoch_order,
    fingerprint,
    flush_denormals,
    resolve_device,
)
from widthlab.engine.events import progress_callback
from widthlab.engine.identity import engine_code_hash
from widthlab.engine.lifecycle import EpochRows, RunRecord, run_trainable
from widthlab.engine.optim import BankOptimizer
from widthlab.engine.spec import data_identity
from widthlab.errors import UsageError
from widthlab.nn.bank import MLPBank, ModelSpec
from widthlab.store import Store

# Part of the stored code version string; run identity comes from the code hash itself
# (widthlab.engine.identity), so nothing needs bumping by hand.
ENGINE_VERSION = 2


@dataclass
class _State:
    """What a checkpoint holds besides the bank and the optimizer."""

    epoch: int = 0
    alive: list[bool] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    shrink_s: float = 0.0           # part of train_s spent removing units


class Engine(BankRows):
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
        mods += [{"hook": describe_hook(h)} for h in self.hooks]
        # whether a modifier kills units (then shrink_every/shrink_mode act and are hashed)
        self.shrinks = any(m.alive_units() is not None for m in self.bank.modifiers
                           if hasattr(m, "alive_units"))
        code = engine_code_hash(list(self.bank.modifiers), self.hooks)
        self.spec = bank_spec(cfg, self.specs, mods, data_identity(data), dataset=data.name,
                              shrinks=self.shrinks, code=code)
        self.run_id = self.spec.run_id()
        self.modifier_config = mods
        self.state = _State(alive=[True] * self.bank.n_models)

    def _build(self, widths: Sequence[int] | None = None) -> None:
        """(Re)create the bank, its modifiers and the optimizer; ``widths``: a shrunk layout."""
        cfg = self.cfg
        self.bank = MLPBank(self.specs, self.data.train.x.shape[1], n_classes(self.data),
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


    # ------------------------------------------------------------------ the Trainable protocol
    unit = "steps"

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    @property
    def epoch(self) -> int:
        return self.state.epoch

    def record(self) -> RunRecord:
        return RunRecord(
            self.run_id, study=self.cfg.study, dataset=self.data.name,
            config={**asdict(self.cfg), "modifiers": self.modifier_config,
                    "device": str(self.device), "data": self.data.describe()},
            models=[s.to_dict() for s in self.specs], seed=self.cfg.data_seed,
            device=str(self.device), precision=self.cfg.precision,
            code_version=f"widthlab {__version__} engine {ENGINE_VERSION}")

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.train) / self.cfg.batch_size)

    def running(self) -> contextlib.AbstractContextManager:
        return flush_denormals(self.device)

    def unit_groups(self) -> list[dict[str, int]]:
        """Per model: the width of each hidden layer (``layer<i>``)."""
        return [{f"layer{i}": int(w) for i, w in enumerate(arch)} for arch in self.bank.archs]

    def run(self, until: int | None = None) -> str:
        """Train (or resume, or skip if done) through the one lifecycle
        (:func:`~widthlab.engine.lifecycle.run_trainable`); returns the run id.

        ``until``: stop after this epoch without finishing the run; a later ``run`` on the same
        engine continues in memory (benchmarks time epochs of several engines in turn).
        While another live process trains the same run in the same store, this waits for it
        and then reuses or resumes its work (:mod:`widthlab.store.claims`).
        """
        in_memory = getattr(self, "_in_memory", False)
        self._in_memory = True
        return run_trainable(self, self.store, self.progress, until=until,
                             in_memory=in_memory)

    def restore(self, ckpt: dict) -> None:
        layout = ckpt.get("layout")
        if layout is not None:  # a shrunk bank: rebuild its layout before loading
            self._build(layout["widths"])
            self.bank.unit_ids = layout["unit_ids"].clone()
        self.bank.load_state_dict(ckpt["bank"])
        if "optimizer" in ckpt:  # a final, weights-only checkpoint has nothing left to train
            self.opt.load_state_dict(ckpt["optimizer"])
        self.state = _State(**ckpt["state"])

    def checkpoint(self, final: bool) -> dict:
        """The bank, the engine state, the layout when shrunk or grown, and the optimizer
        state unless the run ends here (``TrainConfig.keep_optimizer`` keeps it anyway)."""
        ckpt = {"bank": self.bank.state_dict(), "state": asdict(self.state)}
        if not final or self.cfg.keep_optimizer:  # the run can still resume
            ckpt["optimizer"] = self.opt.state_dict()
        layout = self._layout_state()
        if layout is not None:
            ckpt["layout"] = layout
        return ckpt

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

    def timings(self) -> dict:
        s = self.state
        out = {"train_s": round(s.train_s, 3), "eval_s": round(s.eval_s, 3), "steps": s.steps,
               "ms_per_step": round(1e3 * s.train_s / max(s.steps, 1), 3)}
        if self.shrinks:
            out["shrink_s"] = round(s.shrink_s, 3)
        return out

    def train_epoch(self, epoch: int, advance: Callable[[int], None]) -> EpochRows:
        """Train one epoch, check for divergence, shrink at the epoch cadence, evaluate; the
        epoch's rows."""
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
        return EpochRows(metrics, arrays, failures)

    def _train_steps(self, epoch: int, advance: Callable[[int], None]) -> EpochSums:
        """The epoch's minibatch steps over the seeded order; per-model running sums."""
        cfg, bank, dev = self.cfg, self.bank, self.device
        train = self.data.train
        alive = torch.tensor(self.state.alive, dtype=torch.float32, device=dev)
        sums = EpochSums.zeros(bank.n_models, dev, len(train))
        order = epoch_order(len(train), cfg.data_seed, epoch, dev)
        t0 = time.perf_counter()
        n_steps = 0
        every = cfg.shrink_every if (self.shrinks and isinstance(cfg.shrink_every, int)) else 0
        for i in range(0, len(train), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, y = train.x.index_select(0, idx), train.y.index_select(0, idx)
            for mod in bank.modifiers:
                mod.before_step(self.state.steps + n_steps)
            with autocast(dev, cfg.precision):
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



__all__ = ["ENGINE_VERSION", "Engine", "EvalResult", "TrainConfig", "autocast", "epoch_order",
           "evaluate", "fingerprint", "flush_denormals", "load_bank", "resolve_device",
           "train"]
