"""A PyTorch Lightning callback that learns layer widths during ``Trainer.fit``.

``pip install widthlab[lightning]``. Example::

    from widthlab.integrations.lightning import WidthCallback
    cb = WidthCallback(["conv1", "conv2"], price=1e-3, every_n_epochs=1)
    trainer = L.Trainer(max_epochs=10, callbacks=[cb])
    trainer.fit(module, loader)          # gated, priced, shrunk; widths in the logger
    trainer.save_checkpoint("sized.ckpt")
    # later, with a freshly built module: the callback resizes it before the weights load
    L.Trainer(max_epochs=20, callbacks=[WidthCallback(["conv1", "conv2"])]).fit(
        build_module(), loader, ckpt_path="sized.ckpt")
    model = load_sized(build_module(), "sized.ckpt")   # for inference

Mechanism (why): a Lightning callback cannot change the loss (``on_before_backward`` sees it
but its return value is ignored), and its ``on_load_checkpoint`` runs after the module's
weights were loaded. So in ``setup`` the callback gates the module (before
``configure_optimizers``, so the gates are in the optimizer) and wraps two methods *of that
module instance*: ``training_step`` (its loss gets ``price * size_penalty`` added; a tensor or
a dict's ``"loss"``) and ``on_load_checkpoint`` (which Lightning calls before loading the
weights: the module is resized to the checkpoint's shapes there). ``teardown`` removes both
wrappers. Your module's code is not changed and you add nothing to it.
"""

from __future__ import annotations

import torch

from widthlab._compat import ensure_torchvision_importable
from widthlab.errors import UsageError
from widthlab.integrations._core import WidthSizer

ensure_torchvision_importable()
try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("widthlab.integrations.lightning needs Lightning: "
                      "pip install 'widthlab[lightning]'") from exc

WRAPPED = ("training_step", "on_load_checkpoint")


class WidthCallback(pl.Callback):
    """Gate, price, shrink and checkpoint the widths of a LightningModule's layers.

    Parameters
    ----------
    names, groups, price, kind, inputs, seed, init, rule, every_n_steps, every_n_epochs, example
        See :class:`widthlab.integrations.WidthSizer` (default: shrink after every epoch;
        layers gated by name are traced on ``example`` or the module's
        ``example_input_array``).
    log : bool
        Log ``width/<gate key>`` and ``width/penalty`` with ``LightningModule.log`` after
        every training batch (to the trainer's loggers: CSV, TensorBoard, ...).

    Notes
    -----
    Needs one optimizer (``trainer.optimizers[0]``); its state is sliced in place, so its
    learning-rate scheduler keeps working. The callback's ``state_dict`` (saved in every
    Lightning checkpoint) holds the module's size attributes; resuming with
    ``fit(..., ckpt_path=...)`` resizes the freshly built module before its weights and the
    optimizer state load.
    """

    def __init__(self, names=None, *, groups=None, price: float = 1e-4, kind: str = "l1",
                 inputs: bool | str = False, seed: int = 0, init: float | None = None,
                 rule: str = "dead",
                 every_n_steps: int | None = None, every_n_epochs: int | None = 1,
                 log: bool = True, example=None) -> None:
        self.sizer = WidthSizer(names, groups=groups, price=price, kind=kind, inputs=inputs,
                                seed=seed, init=init, rule=rule, every_n_steps=every_n_steps,
                                every_n_epochs=every_n_epochs, example=example)
        self.log_widths = bool(log)
        self._module: pl.LightningModule | None = None
        self._penalty: torch.Tensor | None = None
        self._last_step = -1

    # -- wiring ------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        self.sizer.gate(pl_module)
        self._module = pl_module
        if all(n in vars(pl_module) for n in WRAPPED):
            return
        step, load = pl_module.training_step, pl_module.on_load_checkpoint

        def training_step(*args, **kwargs):
            return self._priced(step(*args, **kwargs), pl_module)

        def on_load_checkpoint(checkpoint):
            self._resize(pl_module, checkpoint)
            return load(checkpoint)

        pl_module.training_step = training_step
        pl_module.on_load_checkpoint = on_load_checkpoint

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for name in WRAPPED:
            vars(pl_module).pop(name, None)

    def _priced(self, out, module):
        if out is None:
            return out
        if isinstance(out, dict):
            if "loss" not in out:
                raise UsageError("training_step returned a dict without 'loss'; WidthCallback "
                                 "adds the size penalty to out['loss']")
            pen = self.sizer.penalty(module)
            self._penalty = pen.detach()
            return {**out, "loss": out["loss"] + pen}
        if not torch.is_tensor(out):
            raise UsageError(f"training_step returned a {type(out).__name__}; WidthCallback "
                             "needs the loss tensor (or a dict with 'loss')")
        pen = self.sizer.penalty(module)
        self._penalty = pen.detach()
        return out + pen

    def _resize(self, module, checkpoint: dict) -> None:
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None:
            return
        self.sizer.resize(module, checkpoint["state_dict"], state["sizes"])
        self.sizer.history = list(state.get("history", []))

    # -- training ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # the same for every micro-batch of an accumulated step
        if self.sizer.due(step=step) and self._last_step != step:
            self._last_step = step
            self._shrink(trainer, pl_module)
        if self.log_widths:
            for key, width in self.sizer.widths(pl_module).items():
                pl_module.log(f"width/{key}", float(width), on_step=True, on_epoch=False)
            if self._penalty is not None:
                pl_module.log("width/penalty", self._penalty, on_step=True, on_epoch=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.sizer.due(epoch=trainer.current_epoch + 1):
            self._shrink(trainer, pl_module)

    def _shrink(self, trainer, pl_module) -> None:
        if len(trainer.optimizers) != 1:
            raise UsageError(f"WidthCallback needs exactly one optimizer, the trainer has "
                             f"{len(trainer.optimizers)}")
        self.sizer.shrink(pl_module, trainer.optimizers[0], step=trainer.global_step)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self._module is None:
            return {}
        return {"sizes": self.sizer.sizes(self._module), "history": self.sizer.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.sizer.history = list(state_dict.get("history", []))


def load_sized(module, path, callback: WidthCallback):
    """Load a sized Lightning checkpoint into a freshly built ``module`` (for inference).

    ``callback``: a ``WidthCallback`` configured as the one the checkpoint was trained with
    (same names, kind and inputs); the module is gated as it was, resized to the
    checkpoint's shapes and loaded. Returns ``module``.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    callback.sizer.gate(module)
    callback._resize(module, ckpt)
    module.load_state_dict(ckpt["state_dict"])
    return module


__all__ = ["WidthCallback", "load_sized"]
