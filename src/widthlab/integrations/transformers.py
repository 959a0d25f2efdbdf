"""Learn FFN widths inside Hugging Face's ``Trainer``: ``WidthCallback`` + ``WidthTrainer``.

``pip install widthlab[transformers]``. Example::

    from widthlab.integrations.transformers import WidthCallback, WidthTrainer, save_sized
    cb = WidthCallback(ffn="all", price=1e-3, every_n_steps=100)
    trainer = WidthTrainer(model=model, args=args, train_dataset=ds, callbacks=[cb])
    trainer.train()                      # gated, priced, shrunk; widths in the log history
    save_sized(model, cb, "sized/")      # a plain model; config.intermediate_size updated
    LlamaForCausalLM.from_pretrained("sized/")   # same logits
    # resume: WidthTrainer(model=build(), ...).train(resume_from_checkpoint=True)
    # whole attention heads too: WidthCallback(ffn="all", heads=True, ...)

Why a ``Trainer`` subclass beside the callback: an HF callback cannot change the loss (its
events return only ``TrainerControl``), it runs ``on_train_begin`` after the optimizer was
built (too late to add the gates to it) and after a checkpoint's weights were loaded (too late
to resize the model). ``compute_loss``, ``train`` and ``save_model`` are the Trainer's
documented override points, so :class:`WidthMixin` uses those and leaves the rest (shrinking
at an interval, where the optimizer and scheduler are at hand) to the callback. Use
``WidthMixin`` with your own Trainer subclass: ``class T(WidthMixin, MyTrainer)``.

What is gated, always through the gate family's group gating (``gate_layers(model,
groups=..., example=...)``, one gate per units-core group, one ``shrink_`` and one
``fold_gates_`` for all): FFN units (the group each FFN's down projection reads, gated at its
input; the model is traced on ``example`` or ``model.dummy_inputs``; removal through the
units core, so SwiGLU's gate and up projections lose the same rows; the gate's key is the
FFN module's name) and, with ``heads=True``, whole attention heads: the model is traced once
on the first batch's ``input_ids`` and its units-core "heads" groups (and the FFN groups of
``ffn``, keyed by group name) are gated; ``shrink_`` removes dead heads (``q/k/v_proj``
rows, ``o_proj`` columns, optimizer state) and updates ``config.num_attention_heads`` /
``num_key_value_heads`` when all layers agree. ``groups=`` adds units-core groups of the
user's choice (residual streams...).
"""

from __future__ import annotations

import json
import os

import torch

from widthlab._compat import ensure_torchvision_importable
from widthlab.errors import UsageError
from widthlab.integrations._core import WidthSizer
from widthlab.integrations._hf_ffn import ffn_groups, ffn_modules
from widthlab.integrations._hf_groups import head_counts, select_groups
from widthlab.nn.surgery import (
    fold_gates_,
    gate_layers,
    gate_widths,
    get_gate_kind,
    model_gates,
    shrink_,
)
from widthlab.nn.surgery.unit_gates import gate_groups

ensure_torchvision_importable()
try:
    import transformers
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError("widthlab.integrations.transformers needs transformers: "
                      "pip install 'widthlab[transformers]'") from exc

SIZES_FILE = "widthlab_sizes.json"
HEAD_FIELDS = ("num_attention_heads", "num_key_value_heads")


class WidthCallback(transformers.TrainerCallback):
    """Shrink dead FFN units every ``every_n_steps`` optimizer steps (needs :class:`WidthMixin`).

    Parameters
    ----------
    ffn : "all" or list of str
        The FFN modules to size (names of ``model.named_modules()`` ending in ``mlp`` with a
        ``down_proj`` / ``c_proj`` / ``fc2`` / ``dense_4h_to_h``).
    heads : bool or list of str
        ``True``: gate and shrink every attention layer's heads (one unit = a key/value head
        with the query heads sharing it); a list: those attention modules (e.g.
        ``["model.layers.0.self_attn"]``). The FFNs of ``ffn`` are then gated through the
        units core too (gate keys ``"<module>:heads"`` and ``"<gate_proj>:out"``).
    groups : optional
        Passed through to ``gate_layers(model, [], groups=groups)`` (the gate family's group
        gating); shrunk with ``shrink_``.
    price, kind, seed, init, rule, every_n_steps
        See :class:`widthlab.integrations.WidthSizer`.
    example : dict, optional
        Model inputs the units core traces to find the FFN groups (default
        ``model.dummy_inputs``; with ``heads``, the first training batch's ``input_ids``).
    """

    def __init__(self, ffn="all", *, heads=False, groups=None, price: float = 1e-4,
                 kind: str = "l1", seed: int = 0, init: float | None = None, rule: str = "dead",
                 every_n_steps: int | None = 100, example: dict | None = None) -> None:
        if heads and groups is not None:
            raise UsageError("give heads= or groups=, not both (heads= chooses the groups)")
        self.sizer = WidthSizer(None, groups=groups, allow_empty=bool(ffn) or bool(heads),
                                price=price, kind=kind, seed=seed, init=init, rule=rule,
                                every_n_steps=every_n_steps)
        self.ffn, self.example, self.gates, self.penalty = ffn, example, {}, None
        self.heads, self.config0 = heads, {}

    def gate(self, model, example=None) -> None:
        """Gate ``model`` (once); ``example``: ``input_ids`` to trace (``heads=``)."""
        if self.gates or model_gates(model):
            return
        config = getattr(model, "config", None)
        self.config0 = {k: getattr(config, k) for k in HEAD_FIELDS
                        if isinstance(getattr(config, k, None), int)}
        if self.heads:
            if example is None:
                example = (self.example or model.dummy_inputs)["input_ids"]
            example = example.to(next(model.parameters()).device)
            self.sizer.groups = select_groups(model, example, self.heads, self.ffn)
            gate_layers(model, groups=self.sizer.groups, example=example, kind=self.sizer.kind,
                        seed=self.sizer.seed, init=self.sizer.init)
            return
        if not self.ffn and self.sizer.groups is None:
            return
        if self.ffn:
            ffn_modules(model, self.ffn)  # names checked before the model is traced
        example = (self.example or model.dummy_inputs)["input_ids"]
        example = example.to(next(model.parameters()).device)
        keys = ffn_groups(model, self.ffn, example) if self.ffn else {}  # group -> mlp name
        gates = gate_groups(model, [*keys, *(self.sizer.groups or [])], example,
                            kind=get_gate_kind(self.sizer.kind), seed=self.sizer.seed,
                            init=self.sizer.init, keys=keys)  # gate_layers(groups=...)'s core
        self.gates = {g.key: g for g in gates if g.key in keys.values()}

    def widths(self, model=None) -> dict[str, int]:
        """``{gate key: units}``; with ``model``, also every gated group's width and
        ``heads/<attention module>``: its number of query heads."""
        out = {k: g.width for k, g in self.gates.items()}
        if model is not None:
            out.update(gate_widths(model))
            if self.heads:
                out.update({f"heads/{k}": n for k, n in head_counts(model).items()})
        return out

    def shrink(self, model, optimizer, step: int = -1) -> dict[str, int]:
        """Remove the dead units now (optimizer state sliced in place)."""
        opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        removed = shrink_(model, opt, rule=self.sizer.rule)
        self.sizer.history.append({"step": step, "removed": removed,
                                   "widths": self.widths(model)})
        return removed

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.sizer.due(step=state.global_step):
            self.shrink(model, optimizer, state.global_step)


class WidthMixin:
    """Trainer methods for :class:`WidthCallback`: gates before the optimizer is built, the
    priced loss, widths in the logs, sizes beside every checkpoint, resized resumes."""

    @property
    def width_callback(self) -> WidthCallback:
        cbs = [c for c in self.callback_handler.callbacks if isinstance(c, WidthCallback)]
        if len(cbs) != 1:
            raise UsageError(f"{type(self).__name__} needs exactly one WidthCallback in "
                             f"callbacks=[...], found {len(cbs)}")
        return cbs[0]

    def compute_loss(self, model, inputs, *args, **kwargs):
        out = super().compute_loss(model, inputs, *args, **kwargs)
        if not model.training:
            return out
        cb = self.width_callback
        loss = out[0] if isinstance(out, tuple) else out
        pen = cb.sizer.penalty(self.model)
        cb.penalty = pen.detach()  # a float only when logged: no device sync per step
        n_items = kwargs.get("num_items_in_batch", args[1] if len(args) > 1 else None)
        if (self.model_accepts_loss_kwargs and n_items is not None
                or self.compute_loss_func is not None):
            # the Trainer then skips its division by the accumulation steps (the loss is
            # already per token of the whole step): divide here, the price counts once a step
            pen = pen / self.current_gradient_accumulation_steps
        loss = loss + pen
        return (loss, *out[1:]) if isinstance(out, tuple) else loss

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        cb = self.width_callback
        cb.gate(self.model, self._width_example(cb))
        if resume_from_checkpoint:
            path = resume_from_checkpoint
            if path is True:
                path = transformers.trainer_utils.get_last_checkpoint(self.args.output_dir)
            if path:
                resize_from_checkpoint(self.model, path)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _width_example(self, cb):
        """The first training batch's ``input_ids`` (the dataset's first items, collated;
        no sampler is drawn from), for ``heads=``."""
        if not cb.heads or cb.example is not None:
            return None
        ds = self.train_dataset
        if ds is None or not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
            return None  # falls back to model.dummy_inputs
        n = min(self.args.per_device_train_batch_size, len(ds))
        batch = self.data_collator([ds[i] for i in range(n)])
        if "input_ids" not in batch:
            raise UsageError("heads= traces the model on the batch's input_ids, which this "
                             "dataset lacks; pass WidthCallback(example={'input_ids': ...})")
        return batch["input_ids"]

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self.callback_handler is not None:
            cb = self.width_callback
            logs.update({f"width/{k}": w for k, w in cb.widths(self.model).items()})
            if cb.penalty is not None:
                logs["width/penalty"] = float(cb.penalty)
        return super().log(logs, *args, **kwargs)

    def save_model(self, output_dir: str | None = None, *args, **kwargs) -> None:
        super().save_model(output_dir, *args, **kwargs)
        write_sizes(self.model, output_dir or self.args.output_dir)


class WidthTrainer(WidthMixin, transformers.Trainer):
    """``transformers.Trainer`` with :class:`WidthMixin`."""


def write_sizes(model, directory: str) -> None:
    """Save ``size_attrs(model)`` as ``widthlab_sizes.json`` in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, SIZES_FILE), "w") as f:
        json.dump(WidthSizer.sizes(model), f, indent=1, sort_keys=True)


def _state_dict(directory: str) -> dict:
    st = os.path.join(directory, "model.safetensors")
    if os.path.exists(st):
        from safetensors.torch import load_file

        return load_file(st)
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(binary):
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise UsageError(f"{directory} has no model.safetensors or pytorch_model.bin "
                     "(sharded checkpoints are not supported yet)")


def _with_tied(model, state: dict) -> dict:
    """``state`` plus the tied tensors a saved file leaves out (GPT-2's ``lm_head.weight``):
    a missing key gets the saved tensor of a key sharing its parameter."""
    own = model.state_dict(keep_vars=True)
    by_tensor = {}
    for key, t in own.items():
        if key in state:
            by_tensor.setdefault(id(t), state[key])
    out = dict(state)
    for key, t in own.items():
        if key not in out and id(t) in by_tensor:
            out[key] = by_tensor[id(t)]
    return out


def resize_from_checkpoint(model, directory: str) -> list[str]:
    """Resize a freshly built (and gated, as when it was saved) ``model`` to the shapes of the
    checkpoint in ``directory``; the Trainer then loads the weights and the optimizer."""
    sizes_path = os.path.join(directory, SIZES_FILE)
    sizes = {}
    if os.path.exists(sizes_path):
        with open(sizes_path) as f:
            sizes = json.load(f)
    return WidthSizer.resize(model, _with_tied(model, _state_dict(directory)), sizes)


def save_sized(model, callback: WidthCallback, directory: str, **kwargs) -> None:
    """Fold the callback's gates into the model (evaluation values) and ``save_pretrained``.

    The FFN and head removal keep ``config.intermediate_size`` (``n_inner``),
    ``num_attention_heads`` and ``num_key_value_heads`` true when every layer has
    the same width: ``from_pretrained(directory)`` then rebuilds the sized model. When layers
    differ the config cannot say so, nor can it state a head count that does not divide
    ``hidden_size`` (Hugging Face refuses such a config; it is saved with the head counts the
    model was built with): load with :func:`load_sized`. The model is plain
    afterwards (no gates): call this after training.
    """
    fold_gates_(model)  # no optimizer: dead units go, the gates fold into o_proj / down_proj
    callback.gates = {}
    cfg = model.config
    hidden, heads = getattr(cfg, "hidden_size", None), getattr(cfg, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and hidden % heads:
        # HF refuses a config whose hidden size is no multiple of the head count (even with
        # head_dim stated): save the head counts it was built with; load with load_sized
        now = {k: getattr(cfg, k) for k in callback.config0}
        for k, v in callback.config0.items():
            setattr(cfg, k, v)
        try:
            model.save_pretrained(directory, **kwargs)
        finally:
            for k, v in now.items():
                setattr(cfg, k, v)
    else:
        model.save_pretrained(directory, **kwargs)
    write_sizes(model, directory)


def load_sized(model_class, directory: str, **kwargs):
    """``model_class.from_pretrained(directory)`` for a model whose layers' widths differ:
    built from its config, resized to the saved shapes, loaded."""
    config = transformers.AutoConfig.from_pretrained(directory)
    model = model_class(config, **kwargs)
    resize_from_checkpoint(model, directory)
    state = _with_tied(model, _state_dict(directory))
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise UsageError(f"{directory} lacks {sorted(missing)}; it was saved from another model")
    model.load_state_dict(state)
    return model.eval()


__all__ = ["WidthCallback", "WidthMixin", "WidthTrainer", "load_sized",
           "resize_from_checkpoint", "save_sized", "write_sizes"]
