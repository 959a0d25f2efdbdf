"""Knowledge distillation for the one trainer: a stored teacher's logits as a training loss.

A :class:`~widthlab.engine.modules.ModuleConfig` with ``distill=a > 0`` trains on

    ``(1 - a) * loss_fn(s, y) + a * T**2 * KL(softmax(t / T) || softmax(s / T))``

(Hinton et al. 2015; ``T = distill_temperature``, ``s`` the student's logits, ``t`` the
teacher's stored logits of the same training examples; the KL term is averaged over the
batch). The teacher's logits are computed once, before training (:func:`teacher_logits`),
and identified by the hash of their bits (:func:`logits_id`), so a run says which teacher
taught it.

Example::

    teacher = build_dense(...); train_module(teacher, train, test, epochs=10)
    logits = teacher_logits(teacher, x_tr)
    train_module(student, train, test, cfg, distill=0.5, teacher=logits)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.data.tensors import DatasetSplits
from widthlab.errors import UsageError


def distill_loss(out: Tensor, y: Tensor, teacher: Tensor, weight: float, temperature: float,
                 loss_fn: Callable = F.cross_entropy) -> Tensor:
    """``(1 - weight) * loss_fn(out, y) + weight * T**2 * KL(p_t || p_s)`` at temperature
    ``T``, the KL divergence of the student's tempered softmax from the teacher's, summed
    over the classes and averaged over the batch.

    Parameters
    ----------
    out : Tensor (B, C)
        The student's logits.
    y : Tensor (B,)
        The labels (for ``loss_fn``).
    teacher : Tensor (B, C)
        The teacher's logits of the same examples (no gradient flows into them).
    weight : float in [0, 1]
    temperature : float > 0
    loss_fn : callable
        The label loss, ``loss_fn(out, y)``.
    """
    log_s = F.log_softmax(out / temperature, dim=-1)
    log_t = F.log_softmax(teacher.detach().to(out.dtype) / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
    return (1 - weight) * loss_fn(out, y) + weight * temperature ** 2 * kl


@torch.no_grad()
def teacher_logits(model: nn.Module, x: Tensor, batch: int = 2000) -> Tensor:
    """``model``'s logits of every row of ``x`` in evaluation mode (restored after), float32,
    on ``x``'s device."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch]).float() for i in range(0, len(x), batch)])
    finally:
        model.train(was)


def logits_id(logits: Tensor) -> str:
    """The sha256 of a teacher's logits (shape, dtype and bits): the run identity's
    ``teacher`` entry."""
    t = logits.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)} {t.dtype}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def check_teacher(teacher: Tensor | None, weight: float, n_train: int, shift: int = 0) -> None:
    """A teacher is given exactly when ``weight > 0``: a float tensor ``(n_train, classes)``,
    or ``(n_train, n_shifts(shift), classes)`` when the run shifts its images."""
    if weight > 0 and teacher is None:
        raise UsageError(f"distill={weight} needs the teacher's logits of the training set: "
                         "pass teacher=teacher_logits(teacher_model, x_train)")
    if weight == 0 and teacher is not None:
        raise UsageError("a teacher was given but distill is 0: set distill (e.g. 0.5) or "
                         "leave the teacher out")
    if teacher is None:
        return
    want = (n_train,) if not shift else (n_train, n_shifts(shift))
    if tuple(teacher.shape[:-1]) != want or not teacher.is_floating_point():
        how = ("teacher_logits(teacher_model, x_train)" if not shift else
               "shifted_teacher_logits(teacher_model, x_train, shape, shift, fill)")
        raise UsageError(f"the teacher's logits must be a float tensor {(*want, 'classes')}, "
                         f"one row per training example in order; got "
                         f"{tuple(teacher.shape)} {teacher.dtype}: use {how}")


def n_shifts(shift: int) -> int:
    """How many translations ``shift`` allows: ``(2 * shift + 1) ** 2``."""
    return (2 * shift + 1) ** 2


def shift_images(x: Tensor, which: Tensor, shape: tuple[int, ...], shift: int,
                 fill: float) -> Tensor:
    """Rows of ``x`` (flattened images of ``shape`` ``(C, H, W)``) translated: row ``b`` by
    translation ``which[b]`` of :func:`n_shifts`, i.e. ``dy = which // (2s+1) - s`` rows and
    ``dx = which % (2s+1) - s`` columns (content moves by ``(dy, dx)``; uncovered pixels get
    ``fill``). ``which == s * (2s+1) + s`` is the image itself."""
    c, h, w = shape
    k = 2 * shift + 1
    pad = torch.nn.functional.pad(x.reshape(-1, c, h, w), (shift,) * 4, value=fill)
    oy = shift - torch.div(which, k, rounding_mode="floor") + shift
    ox = shift - which % k + shift
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    b = torch.arange(len(x), device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return pad[b, chans, rows, cols].reshape(len(x), -1)


@torch.no_grad()
def shifted_teacher_logits(model: nn.Module, x: Tensor, shape: tuple[int, ...], shift: int,
                           fill: float, batch: int = 2000) -> Tensor:
    """``model``'s logits of every row of ``x`` under every translation of
    :func:`shift_images`: ``(N, n_shifts(shift), C)``, what a run with ``cfg.shift`` distills
    from (``shift == 0``: ``(N, C)``, :func:`teacher_logits`)."""
    if not shift:
        return teacher_logits(model, x, batch)
    out = []
    for t in range(n_shifts(shift)):
        which = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        out.append(teacher_logits(model, shift_images(x, which, shape, shift, fill), batch))
    return torch.stack(out, dim=1)


def image_augment(data: DatasetSplits, shift: int) -> tuple[tuple[int, ...], float] | None:
    """``(image shape, fill)`` of ``shift``-pixel translations of ``data``'s training images
    (the fill: the training inputs' minimum); None without a shift."""
    if not shift:
        return None
    shape = tuple(data.sample_shape or ())
    if len(shape) != 3 or shape[0] * shape[1] * shape[2] != data.n_features:
        raise UsageError(f"shift={shift} translates images, but the data have no (C, H, W) "
                         f"sample shape (got {shape or None}); give the images with their "
                         "shape (e.g. arrays (N, H, W)) or leave shift at 0")
    return shape, float(data.train.x.min())


__all__ = ["check_teacher", "distill_loss", "image_augment", "logits_id", "n_shifts",
           "shift_images", "shifted_teacher_logits", "teacher_logits"]
