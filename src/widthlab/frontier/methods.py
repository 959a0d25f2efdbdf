"""Frontier methods: OBS elimination (plain and cross-entropy-aware) and the ordering criteria.

``obs`` and ``obs_ce`` remove neurons greedily and compensate the consumer (see
:mod:`widthlab.frontier.obs`); ``obs_ce`` weighs the consumer's outputs by the mean Hessian of
the cross-entropy in the logits ``E[diag(p) - p p^T]`` and needs the consumer to be the output
layer. ``obs_refit`` keeps the ``obs`` order and, at every evaluated width, refits the
consumer's weights and bias to the cross-entropy on ``calib`` (L-BFGS from the ``obs`` weights,
a small proximal term towards them; through the rest of the network). The ordering criteria
keep the top ``k`` neurons of a score and leave the consumer's weights as they are: ``exact``
(exact single-neuron importance), the proxies of :func:`widthlab.metrics.importance.proxies`
(``act_std``, ``in_norm``, ``out_norm``, ``taylor``, ``contribution``, ``taylor2``) and
``random``.

The importance criteria of :mod:`widthlab.metrics.importance` are defined on widthlab's ReLU
MLPs; :func:`importance_adapter` presents any layer whose consumer reads non-negative
activations and whose suffix is a ReLU/Linear chain as such an MLP: an identity first layer fed
with the cached activations, then the consumer and the suffix's layers (exact, no retraining).

Example::

    prep = prepare(model, "0", calib, eval)
    order = keep_order(prep, "taylor")      # most important first
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.frontier.prepare import Prepared, logits_of
from widthlab.metrics.importance import exact_importance, proxies
from widthlab.metrics.ordering import ordering
from widthlab.nn.bank import MLP
from widthlab.units.scores import Random, ScoreGroup

__all__ = ["METHODS", "OBS_METHODS", "ORDER_METHODS", "ce_metric", "importance_adapter",
           "keep_order", "refit_consumer"]

OBS_METHODS = ("obs", "obs_ce", "obs_refit")
ORDER_METHODS = ("exact", "act_std", "in_norm", "out_norm", "taylor", "contribution",
                 "taylor2", "random")
#: Every method name :func:`widthlab.frontier.width_frontier` accepts.
METHODS = OBS_METHODS + ORDER_METHODS

_RELU = ("relu", "relu_")


def _suffix_linears(prep: Prepared) -> list[nn.Linear] | None:
    """The Linear layers after the consumer when the suffix is (ReLU, Linear)*, else None
    (from the operations the forward ran after the consumer, :attr:`LayerPath.after`)."""
    if prep.suffix is None:
        return []
    tokens: list[object] = []
    for name, m in prep.path.after:
        if isinstance(m, nn.Dropout | nn.Identity):
            continue
        if isinstance(m, nn.Linear):
            tokens.append(m)
        elif isinstance(m, nn.ReLU) or (m is None and name in _RELU):
            tokens.append("relu")
        else:
            return None
    pattern = all((t == "relu") if i % 2 == 0 else isinstance(t, nn.Linear)
                  for i, t in enumerate(tokens))
    return tokens[1::2] if pattern and len(tokens) % 2 == 0 else None


def importance_adapter(prep: Prepared) -> MLP:
    """A float64 :class:`~widthlab.nn.MLP` whose hidden layer 0 *is* the layer's neurons when
    fed the cached activations: identity weights, then the consumer and the suffix's layers.

    Raises
    ------
    UsageError
        If the activations can be negative (the MLP's ReLU would change them) or the network
        after the consumer is not a chain of ReLU and Linear layers.
    """
    rest = _suffix_linears(prep)
    if rest is None:
        raise UsageError(f"the network after consumer {prep.path.consumer!r} is not a ReLU/"
                         "Linear chain, which the importance criteria need; use method='obs'")
    if any(bool((a < 0).any()) for a in prep.at.values()):
        raise UsageError(f"layer {prep.path.layer!r} has negative outputs after its "
                         f"element-wise ops ({', '.join(prep.path.ops) or 'none'}); the "
                         "importance criteria need ReLU-like outputs; use method='obs'")
    h = prep.width
    sizes = [h, h, prep.w0.shape[0]] + [m.out_features for m in rest]
    mlp = MLP(sizes).to(device=prep.device, dtype=torch.float64)
    with torch.no_grad():
        mlp.layers[0].weight.copy_(torch.eye(h))
        mlp.layers[0].bias.zero_()
        mlp.layers[1].weight.copy_(prep.w0)
        mlp.layers[1].bias.copy_(prep.b0)
        for dst, src in zip(mlp.layers[2:], rest, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias if src.bias is not None else torch.zeros_like(dst.bias))
    return mlp


def keep_order(prep: Prepared, method: str, *, seed: int = 0) -> np.ndarray:
    """Neuron indices from most to least important by an ordering criterion (on ``calib``)."""
    if method == "random":  # the scorer's permutation is the keep order itself
        return Random(seed)(ScoreGroup((), prep.width)).numpy().astype(np.int64)
    mlp = importance_adapter(prep)
    a, y = prep.at["calib"].t(), prep.y["calib"]
    if method == "exact":
        return ordering(exact_importance(mlp, a, y, layer=0, chunk=prep.chunk))
    scores = proxies(mlp, a, y, layer=0, chunk=prep.chunk)
    layer = dict(prep.model64.named_modules())[prep.path.layer]
    scores["in_norm"] = layer.weight.detach().norm(dim=1).cpu().numpy()  # the real layer's
    if method not in scores:
        raise UsageError(f"method {method!r} needs the consumer to be the output layer "
                         f"(taylor2 is a second-order expansion in the logits)")
    return ordering(scores[method])


@torch.no_grad()
def ce_metric(prep: Prepared) -> Tensor:
    """``E[diag(p) - p p^T]`` over ``calib``, ``p`` the model's softmax: ``(C, C)`` float64."""
    if prep.suffix is not None:
        raise UsageError(f"method 'obs_ce' needs the consumer {prep.path.consumer!r} to be the "
                         "output layer (it weighs the logits by the cross-entropy's Hessian); "
                         "use method='obs'")
    c = prep.w0.shape[0]
    f = torch.zeros(c, c, dtype=torch.float64, device=prep.device)
    n = len(prep.y["calib"])
    step = max(1, prep.chunk // max(prep.width, 1))
    for i in range(0, n, step):
        p = torch.softmax(logits_of(prep, prep.at["calib"], prep.w0, prep.b0,
                                    slice(i, i + step)), 1)
        f += torch.diag(p.sum(0)) - p.t() @ p
    return f / n


def refit_consumer(prep: Prepared, kept: Tensor, w: Tensor, b: Tensor, *, iters: int = 30,
                   prox: float = 1e-4) -> tuple[Tensor, Tensor]:
    """Consumer weights ``(C, k)`` and bias minimising ``CE(calib) + prox * ||W - w||^2`` for
    the kept neurons, by L-BFGS (strong Wolfe line search, so never worse than the start)."""
    a = prep.at["calib"][kept].t()  # (n, k)
    y = prep.y["calib"]
    w_new = w.detach().clone().requires_grad_(True)
    b_new = b.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w_new, b_new], max_iter=iters, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        opt.zero_grad()
        z = torch.addmm(b_new, a, w_new.t())
        logits = z if prep.suffix is None else prep.suffix(z)
        loss = F.cross_entropy(logits, y) + prox * ((w_new - w) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(objective)
    return w_new.detach(), b_new.detach()
