"""Flexible layers: a sigmoid cut-off over the neuron index that learns the layer's width.

The journal's "metric-less resizing" scales the activation of hidden neuron ``i`` by

    s_i = sigmoid(-k (i - x0)) = sigmoid(k (x0 - i)),    i = 0 .. N-1

so neurons left of the cut-off ``x0`` are on (``s ~ 1``), neurons right of it are off
(``s ~ 0``) and about ``10 / k`` neurons in between form the "gray zone". ``x0`` is learned (with
its own learning rate, 1 in the journal); ``k`` is fixed (1 in the journal) or learned. The size
penalty is the integral of the scaler over ``[0, N]``,

    P(x0, k, N) = integral_0^N sigmoid(k (x0 - t)) dt = (softplus(k x0) - softplus(k (x0 - N))) / k,

computed in closed form in float64 with hand-written gradients (:func:`cutoff_integral`), so value
and gradients are finite and accurate for every finite ``x0`` and ``k > 0`` (the journal's first
autograd version only produced NaN).

Two front ends share that one penalty implementation:

- :class:`FlexibleLinear`: a standalone ``nn.Module`` (``Linear -> ReLU -> * s``) with
  ``.penalty()``, ``.effective_width()`` and ``.prune()``; :class:`FlexibleMLP` adds the output
  layer and prunes to a plain network.
- :class:`FlexibleCutoff`: a bank modifier (:class:`~widthlab.nn.modifiers.Modifier`) applying the
  same cut-off to every model of an :class:`~widthlab.nn.bank.MLPBank` at once, each model with
  its own ``N``, ``x0``, penalty weight and slope, so a whole sweep trains in one engine run.

Example::

    import torch
    from widthlab.nn.flexible import FlexibleLinear

    layer = FlexibleLinear(784, 500, x0=100.0)      # N = 500 neurons, 100 of them on
    opt = torch.optim.Adam(layer.param_groups(lr=1e-3))   # x0 gets lr 1 (layer.x0_lr)
    out = layer(torch.randn(32, 784))                # (32, 500)
    loss = out.square().mean() + 1e-4 * layer.penalty()
    layer.effective_width(), layer.prune()           # ~100.0, Linear(784 -> ~105): to x0 + 5

Variants from the journal: a *random slope* (``random_slope=True``) draws the gray-zone width
uniformly in ``[1, 20]`` at every training step (``k = 10 / width``, so a slope of 1 is a gray
zone of 10); *random activation* (``random_activation=True``) keeps neuron ``i`` with probability
``s_i`` instead of scaling it, which gives the size exactly zero gradient (the journal's reason
to drop the idea; see :func:`random_activation`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn.modifiers import Modifier

__all__ = ["GRAY_ZONE_FACTOR", "PRUNE_THRESHOLD", "FlexibleCutoff", "FlexibleLinear", "FlexibleMLP",
           "cutoff_integral", "cutoff_scale", "cutoff_scale_array", "random_activation",
           "random_slopes"]

#: A slope ``k`` leaves about ``GRAY_ZONE_FACTOR / k`` neurons with a scaler in (0.007, 0.993).
GRAY_ZONE_FACTOR = 10.0
#: Scaler at the right end of the gray zone, ``sigmoid(-5)``: :meth:`FlexibleLinear.prune` keeps
#: the neurons up to there (cutting at 0.5, i.e. at ``x0``, drops neurons still scaled by up to
#: 0.5 and cost a 23-neuron FashionMNIST model 1.35 points of test accuracy).
PRUNE_THRESHOLD = 1.0 / (1.0 + math.exp(GRAY_ZONE_FACTOR / 2))
K_RANGE = (1e-4, 1e4)  # a learned slope is clamped here (exp of a wild log-slope stays finite)


# ------------------------------------------------------------------------------ the penalty
def _softplus(z: Tensor) -> Tensor:
    """``log(1 + e^z)`` to full float64 precision (torch's softplus returns ``z`` above 20)."""
    return z.clamp(min=0) + torch.log1p(torch.exp(-z.abs()))


def _h(z: Tensor) -> Tensor:
    """``z sigmoid(z) - softplus(z)``, an even function, from its small-terms form."""
    a = -z.abs()
    return a * torch.sigmoid(a) - _softplus(a)


class _CutoffIntegral(torch.autograd.Function):
    """``P(x0, k, n)`` with closed-form gradients (float64 in, float64 out).

    For ``x0 > n / 2`` the mirror identity ``P(x0) = n - P(n - x0)`` is used, so the softplus
    difference is always taken where it does not cancel; the gradients are evaluated in the same
    reduced coordinate:

        dP/dx0 = sigmoid(k x0) - sigmoid(k (x0 - n))
        dP/dk  = (h(k x0) - h(k (x0 - n))) / k^2,   h(z) = z sigmoid(z) - softplus(z)
    """

    @staticmethod
    def forward(ctx, x0: Tensor, k: Tensor, n: Tensor) -> Tensor:
        mirror = x0 > n / 2
        xr = torch.where(mirror, n - x0, x0)  # reduced cut-off, always <= n / 2
        u, v = k * xr, k * (xr - n)           # v <= -k n / 2 <= 0: softplus(v) is small
        p = (_softplus(u) - _softplus(v)) / k
        ctx.save_for_backward(mirror, xr, k, n)
        return torch.where(mirror, n - p, p)

    @staticmethod
    def backward(ctx, grad: Tensor):
        mirror, xr, k, n = ctx.saved_tensors
        u, v = k * xr, k * (xr - n)
        d_x0 = torch.sigmoid(u) - torch.sigmoid(v)  # the same in both branches
        d_k = (_h(u) - _h(v)) / (k * k)
        d_k = torch.where(mirror, -d_k, d_k)
        gx = grad * d_x0 if ctx.needs_input_grad[0] else None
        gk = grad * d_k if ctx.needs_input_grad[1] else None
        return gx, gk, None


def cutoff_integral(x0: Tensor | float, k: Tensor | float, n: Tensor | float) -> Tensor:
    """Integral of the cut-off scaler over ``[0, n]``: the flexible layers' size penalty.

    Parameters
    ----------
    x0 : tensor or float
        Cut-off position(s); any finite value (the penalty tends to 0 for ``x0 -> -inf`` and to
        ``n`` for ``x0 -> +inf``).
    k : tensor or float
        Slope(s), ``> 0``.
    n : tensor or float
        Layer width(s) ``N``, ``> 0``.

    Returns
    -------
    Tensor
        ``(softplus(k x0) - softplus(k (x0 - n))) / k``, broadcast over the inputs, computed in
        float64 with closed-form gradients for ``x0`` and ``k`` and returned in the dtype of
        ``x0`` (float64 for Python numbers).
    """
    like = x0 if isinstance(x0, Tensor) else None
    dev = like.device if like is not None else None
    t = [v if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64, device=dev)
         for v in (x0, k, n)]
    shape = torch.broadcast_shapes(*(v.shape for v in t))
    x0d, kd, nd = (v.double().expand(shape) for v in t)  # autograd sums expanded gradients
    out = _CutoffIntegral.apply(x0d, kd, nd)
    return out.to(like.dtype) if like is not None and like.is_floating_point() else out


def cutoff_scale(index: Tensor, x0: Tensor, k: Tensor | float) -> Tensor:
    """The scaler ``sigmoid(k (x0 - index))`` (every argument broadcast)."""
    return torch.sigmoid(k * (x0 - index))


def cutoff_scale_array(x0: float, k: float, n: int) -> np.ndarray:
    """:func:`cutoff_scale` of neurons ``i = 0 .. n-1`` in float64, as a numpy array ``(n,)``
    (analyses of a stored cut-off ``x0`` and slope ``k``)."""
    index = torch.arange(int(n), dtype=torch.float64)
    x0_t = torch.tensor(float(x0), dtype=torch.float64)
    return cutoff_scale(index, x0_t, float(k)).numpy()


def random_slopes(n: int, step: int, seed: int = 0, gray_zone: tuple[float, float] = (1.0, 20.0),
                  device: torch.device | str = "cpu") -> Tensor:
    """``n`` slopes for training step ``step``: gray-zone width ``U(lo, hi)``, ``k = 10 / width``.

    The draw depends only on ``(seed, step)``, so a resumed run sees the same slopes.
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    lo, hi = gray_zone
    width = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    return (GRAY_ZONE_FACTOR / width).to(device=device, dtype=torch.float32)


def random_activation(a: Tensor, scale: Tensor, generator: torch.Generator | None = None
                      ) -> Tensor:
    """The journal's "random activation": keep each neuron with probability ``scale``.

    ``a`` is ``(B, H)``, ``scale`` is ``(H,)``; one Bernoulli draw per neuron and batch. The mask
    is a sample, so no gradient reaches ``scale`` (nor ``x0``, nor ``k``): the size cannot learn.
    """
    # the graph runs through the sample, as in the journal's version: torch defines the
    # derivative of a Bernoulli draw with respect to its probability as zero
    mask = torch.bernoulli(scale.expand_as(a), generator=generator)  # (B, H)
    return a * mask


def _check_gray_zone(gray_zone: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in gray_zone)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise UsageError(f"gray_zone must be (lo, hi) with 0 < lo <= hi, got {gray_zone!r}")
    return lo, hi


def _check_k(k: float) -> float:
    k = float(k)
    if not (k > 0 and math.isfinite(k)):
        raise UsageError(f"slope k must be a finite number > 0, got {k!r}; the journal uses 1")
    return k


# ------------------------------------------------------------------------------ standalone layer
def _linear(n_in: int, n_out: int, bias: bool, like: Tensor) -> nn.Linear:
    """An ``nn.Linear`` whose weights the caller overwrites (a width of 0 is allowed: torch
    warns that initialising it is a no-op, which is fine here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(n_in, n_out, bias=bias, device=like.device, dtype=like.dtype)


class FlexibleLinear(nn.Module):
    """``relu(x W^T + b) * sigmoid(k (x0 - i))``: a linear layer that learns how many of its
    ``out_features`` neurons it uses.

    Parameters
    ----------
    in_features, out_features : int
        ``out_features`` is ``N``, the most neurons the layer can use.
    x0 : float or None
        Starting cut-off; None starts at ``N`` (the journal's initialisation). The value given is
        the value used (the journal's erratum: its first version ignored it).
    k : float
        Slope of the cut-off (1 in the journal: a gray zone of about 10 neurons).
    learn_k : bool
        Learn the slope too (as ``log k``, clamped to ``[1e-4, 1e4]``).
    x0_lr : float
        Learning rate for ``x0`` (and ``log k``) in :meth:`param_groups` (1 in the journal).
    random_slope : bool
        Draw the gray-zone width uniformly in ``gray_zone`` at every training forward pass
        (``k = 10 / width``); evaluation uses ``k``. The penalty uses the slope of the last
        training forward.
    gray_zone : (float, float)
        Range of the random gray-zone width.
    random_activation : bool
        Keep neuron ``i`` with probability ``s_i`` during training instead of scaling it (the
        size then gets zero gradient; kept to demonstrate that).
    seed : int
        Seed of the random slope / activation draws.
    bias, device, dtype
        As for ``nn.Linear``.

    Attributes
    ----------
    linear : nn.Linear
    x0 : nn.Parameter, shape ()
    """

    def __init__(self, in_features: int, out_features: int, x0: float | None = None,
                 k: float = 1.0, *, learn_k: bool = False, x0_lr: float = 1.0,
                 random_slope: bool = False, gray_zone: tuple[float, float] = (1.0, 20.0),
                 random_activation: bool = False, seed: int = 0, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {n!r}; give the layer "
                                 "at least one input and one unit")
        if learn_k and random_slope:
            raise UsageError("random_slope draws k at every step; it cannot be learned too "
                             "(pass learn_k=False or random_slope=False)")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.linear = nn.Linear(in_features, out_features, bias=bias, device=device,
                                dtype=dtype)
        start = float(out_features) if x0 is None else float(x0)
        if not math.isfinite(start):
            raise UsageError(f"x0 must be finite, got {x0!r}")
        p = self.linear.weight
        self.x0 = nn.Parameter(torch.tensor(start, device=p.device, dtype=p.dtype))
        k = _check_k(k)
        self.learn_k = bool(learn_k)
        if self.learn_k:
            self.log_k = nn.Parameter(torch.tensor(math.log(k), device=p.device, dtype=p.dtype))
        else:
            self.register_buffer("k0", torch.tensor(k, device=p.device, dtype=p.dtype))
        self.x0_lr = float(x0_lr)
        self.random_slope, self.random_act = bool(random_slope), bool(random_activation)
        self.gray_zone = _check_gray_zone(gray_zone)
        self.seed = int(seed)
        self.steps = 0  # training forward passes so far (seeds the random draws)
        self._k_step: Tensor | None = None
        self.register_buffer("index", torch.arange(out_features, device=p.device,
                                                   dtype=p.dtype), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, x0: float | None = None, k: float = 1.0,
                    **kwargs) -> FlexibleLinear:
        """A flexible layer holding a copy of ``linear``'s weights."""
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, x0, k,
                    bias=linear.bias is not None, device=w.device, dtype=w.dtype, **kwargs)
        with torch.no_grad():
            layer.linear.weight.copy_(w)
            if linear.bias is not None:
                layer.linear.bias.copy_(linear.bias)
        return layer

    # -------------------------------------------------------------- the cut-off
    @property
    def k(self) -> Tensor:
        """The slope in use at evaluation, shape ()."""
        if self.learn_k:
            return self.log_k.exp().clamp(*K_RANGE)
        return self.k0

    def _slope(self) -> Tensor:
        if self._k_step is not None:
            return self._k_step
        return self.k

    def scaler(self) -> Tensor:
        """Multiplier of each neuron ``(N,)`` with the slope of the current pass."""
        return cutoff_scale(self.index, self.x0, self._slope())

    def forward(self, x: Tensor) -> Tensor:
        training = self.training and torch.is_grad_enabled()
        self._k_step = None
        if training and self.random_slope:
            self._k_step = random_slopes(1, self.steps, self.seed, self.gray_zone,
                                         self.x0.device)[0].to(self.x0.dtype)
        a = F.relu(self.linear(x))  # (B, N)
        s = self.scaler()           # (N,)
        if training:
            self.steps += 1
            if self.random_act:
                g = torch.Generator(device=a.device).manual_seed(self.seed * 1_000_003
                                                                 + self.steps)
                return random_activation(a, s, g)
        return a * s

    def penalty(self) -> Tensor:
        """Integral of the scaler over ``[0, N]`` (scalar, dtype of ``x0``): add ``lambda *
        penalty()`` to the loss. Finite with finite gradients for every finite ``x0``."""
        return cutoff_integral(self.x0, self._slope(), float(self.out_features))

    def effective_width(self) -> float:
        """The cut-off ``x0``, clipped to ``[0, N]``."""
        return float(self.x0.detach().clamp(0, self.out_features))

    def kept(self, threshold: float = PRUNE_THRESHOLD) -> Tensor:
        """Indices of the neurons whose evaluation scaler is at least ``threshold``: by default
        the neurons left of the end of the gray zone (``x0 + 5 / k``); 0.5 keeps exactly those
        left of ``x0``. Always a prefix ``0 .. n-1``."""
        if not 0 < threshold < 1:
            raise UsageError(f"threshold must be in (0, 1), got {threshold!r}")
        with torch.no_grad():
            s = cutoff_scale(self.index, self.x0, self.k)
        return torch.nonzero(s >= threshold).flatten()

    def prune(self, threshold: float = PRUNE_THRESHOLD) -> nn.Linear:
        """A plain ``nn.Linear`` of the neurons left of the cut-off.

        The cut-off is taken at the end of the gray zone (scaler ``>= sigmoid(-5) = 0.0067``,
        about ``x0 + 5 / k`` neurons) so that what is dropped is negligible; ``threshold=0.5``
        keeps only the neurons left of ``x0``. The kept neurons' scalers are folded into their
        weight rows and biases (``s relu(z) = relu(s z)`` for ``s > 0``), so
        ``relu(pruned(x))`` equals the kept columns of this layer's output exactly.
        """
        keep = self.kept(threshold)
        w = self.linear.weight
        out = _linear(self.in_features, len(keep), self.linear.bias is not None, w)
        with torch.no_grad():
            s = cutoff_scale(self.index[keep], self.x0, self.k)  # (n,)
            out.weight.copy_(w[keep] * s[:, None])
            if self.linear.bias is not None:
                out.bias.copy_(self.linear.bias[keep] * s)
        return out

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the linear weights at ``lr``, the cut-off at ``x0_lr``."""
        size = [self.x0] + ([self.log_k] if self.learn_k else [])
        return [{"params": list(self.linear.parameters()), "lr": lr},
                {"params": size, "lr": self.x0_lr}]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"x0={float(self.x0.detach()):.4g}, k={float(self.k.detach()):.4g}, "
                f"learn_k={self.learn_k}, "
                f"random_slope={self.random_slope}, random_activation={self.random_act}")


class FlexibleMLP(nn.Module):
    """One flexible hidden layer and a linear output layer (the journal's ``1h_flexible``).

    Parameters
    ----------
    in_features, hidden, out_features : int
    **kwargs
        Passed to :class:`FlexibleLinear` (``x0``, ``k``, ``random_slope``, ...).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, **kwargs):
        super().__init__()
        self.flex = FlexibleLinear(in_features, hidden, **kwargs)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flex(x))

    def penalty(self) -> Tensor:
        return self.flex.penalty()

    def prune(self, threshold: float = PRUNE_THRESHOLD) -> nn.Sequential:
        """``Linear -> ReLU -> Linear`` with only the neurons left of the cut-off (see
        :meth:`FlexibleLinear.prune`)."""
        first = self.flex.prune(threshold)
        keep = self.flex.kept(threshold)
        head = _linear(len(keep), self.head.out_features, True, self.head.weight)
        with torch.no_grad():
            head.weight.copy_(self.head.weight[:, keep])
            head.bias.copy_(self.head.bias)
        return nn.Sequential(first, nn.ReLU(), head)

    @classmethod
    def from_bank(cls, bank, m: int) -> FlexibleMLP:
        """Model ``m`` of a bank trained with a :class:`FlexibleCutoff`, as a standalone network
        (evaluation slope, current ``x0``)."""
        # exactly FlexibleCutoff: a subclass may cut over another order (sorted layers)
        cut = [mod for mod in bank.modifiers if type(mod) is FlexibleCutoff]
        if len(cut) != 1:
            raise UsageError("the bank needs exactly one FlexibleCutoff modifier to export a "
                             f"flexible model; it has {len(cut)}")
        if len(bank.specs[m].hidden) != 1:
            raise UsageError(f"model {m} has hidden layers {bank.specs[m].hidden}; flexible "
                             "export supports one hidden layer")
        mlp = bank.export(m)
        first, last = mlp.layers[0], mlp.layers[1]
        net = cls(first.in_features, first.out_features, last.out_features,
                  x0=float(cut[0].x0.detach()[m]), k=float(cut[0].slope().detach()[m]))
        net = net.to(first.weight.device)
        with torch.no_grad():
            net.flex.linear.load_state_dict(first.state_dict())
            net.head.load_state_dict(last.state_dict())
        return net.eval()


# ------------------------------------------------------------------------------ bank modifier
def _per_model(value, n_models: int, what: str, default: float | None = None) -> list:
    if value is None:
        return [default] * n_models
    if isinstance(value, (int, float, bool, np.floating, np.integer, np.bool_)):
        return [value] * n_models
    values = list(value)
    if len(values) != n_models:
        raise UsageError(f"{what} needs one value or one per model ({n_models}), "
                         f"got {len(values)}")
    return values


class FlexibleCutoff(Modifier):
    """The flexible cut-off for every model of a bank (one hidden layer's neurons).

    Model ``m`` of width ``N_m`` scales its neuron ``i = 0 .. N_m - 1`` by
    ``sigmoid(k_m (x0_m - i))`` and adds ``penalty_m * P(x0_m, k_m, N_m)`` to its loss.

    Parameters
    ----------
    x0 : float, sequence of float or None
        Starting cut-off, one for all models or one per model; None = each model's width.
    penalty : float or sequence of float
        Weight of the size penalty (0: none).
    k : float or sequence of float
        Slope (1 in the journal).
    learn_k : bool
        Learn the slope as ``log k`` (clamped to ``[1e-4, 1e4]``).
    k_lr : float
        Effective learning rate of ``log k`` (Adam steps are about the learning rate in size;
        the stored parameter is ``log k * lr / k_lr`` so the modifier's single ``lr`` moves
        ``log k`` by about ``k_lr``).
    random_slope : bool or sequence of bool
        Per model: draw the gray-zone width uniformly in ``gray_zone`` at every training step
        (``k = 10 / width``), from a generator seeded by ``(seed, step)``; evaluation uses ``k``.
    gray_zone : (float, float)
    lr : float or sequence of float
        Learning rate of ``x0`` (1 in the journal), one for all models or one per model (so
        variants differing only in it train in one bank; not with ``learn_k``).
    seed : int

    Records per model and epoch: ``x0``, ``size_grad`` (mean of ``dloss/dx0`` over the epoch's
    steps, penalty included), ``size_grad_std`` and, with ``learn_k``, ``k``.
    """

    def __init__(self, x0: float | Sequence[float] | None = None, *,
                 penalty: float | Sequence[float] = 0.0, k: float | Sequence[float] = 1.0,
                 learn_k: bool = False, k_lr: float = 0.01,
                 random_slope: bool | Sequence[bool] = False,
                 gray_zone: tuple[float, float] = (1.0, 20.0),
                 lr: float | Sequence[float] = 1.0, seed: int = 0):
        super().__init__()
        self.x0_init, self.penalty_init, self.k_init = x0, penalty, k
        self.learn_k, self.k_lr = bool(learn_k), float(k_lr)
        self.random_init, self.gray_zone = random_slope, _check_gray_zone(gray_zone)
        per_model = not isinstance(lr, (int, float, np.floating, np.integer))
        lrs = [float(v) for v in lr] if per_model else [float(lr)]
        if not lrs or not all(v >= 0 and math.isfinite(v) for v in lrs):
            raise UsageError(f"lr must be a finite number >= 0 (or one per model), got {lr!r}")
        if per_model and self.learn_k:
            raise UsageError("learn_k needs one x0 learning rate for every model; give lr as "
                             "one number")
        if not self.k_lr > 0:
            raise UsageError(f"k_lr must be > 0, got {k_lr!r}")
        self.lr, self.seed = (lrs if per_model else lrs[0]), int(seed)

    def build(self, bank) -> None:
        m_count = bank.n_models
        widths = [s.width for s in bank.specs]
        x0 = [float(v) for v in _per_model(self.x0_init, m_count, "x0")] \
            if self.x0_init is not None else [float(w) for w in widths]
        lam = [float(v) for v in _per_model(self.penalty_init, m_count, "penalty")]
        ks = [_check_k(v) for v in _per_model(self.k_init, m_count, "k")]
        rnd = [bool(v) for v in _per_model(self.random_init, m_count, "random_slope")]
        if not all(math.isfinite(v) for v in x0):
            raise UsageError(f"x0 must be finite, got {self.x0_init!r}")
        if not all(v >= 0 and math.isfinite(v) for v in lam):
            raise UsageError(f"penalty weights must be finite and >= 0, got {self.penalty_init!r}")
        if self.learn_k and any(rnd):
            raise UsageError("random_slope draws k at every step; it cannot be learned too")
        self.x0 = nn.Parameter(torch.tensor(x0, dtype=torch.float32))  # (M,)
        _per_model(self.lr, m_count, "lr")  # one x0 learning rate, or one per model
        self._log_k_scale = self.k_lr / max(self.model_lr(0), 1e-12)
        if self.learn_k:
            self.log_k = nn.Parameter(torch.tensor(ks, dtype=torch.float64).log().float()
                                      / self._log_k_scale)  # (M,)
        else:
            self.register_buffer("k_base", torch.tensor(ks), persistent=False)  # (M,)
        self.register_buffer("lam", torch.tensor(lam, dtype=torch.float64), persistent=False)
        self.register_buffer("width", torch.tensor(widths, dtype=torch.float64),
                             persistent=False)  # (M,) N of each model
        self.register_buffer("random", torch.tensor(rnd), persistent=False)  # (M,) bool
        index = torch.empty(bank.n_hidden)
        for a, b in self.slices:
            index[a:b] = torch.arange(b - a, dtype=torch.float32)
        self.register_buffer("index", index, persistent=False)  # (H,) neuron index in its model
        self._k_step: Tensor | None = None
        self._reset_grad_stats()

    def describe(self) -> dict:
        def listed(v):
            if v is None or isinstance(v, (int, float, bool)):
                return v
            return [float(x) if not isinstance(x, bool) else x for x in v]

        return {**super().describe(), "x0": listed(self.x0_init),
                "penalty": listed(self.penalty_init), "k": listed(self.k_init),
                "learn_k": self.learn_k, "k_lr": self.k_lr if self.learn_k else None,
                "random_slope": listed(self.random_init), "gray_zone": list(self.gray_zone),
                "seed": self.seed, "scaler": "sigmoid(k (x0 - i))",
                "penalty_form": "lam * integral_0^N scaler"}

    def model_lr(self, m: int) -> float:
        """The learning rate of model ``m``'s ``x0``."""
        return self.lr[m] if isinstance(self.lr, list) else self.lr

    # -------------------------------------------------------------- the cut-off
    def slope(self) -> Tensor:
        """Each model's evaluation slope ``(M,)``."""
        if self.learn_k:
            return (self.log_k * self._log_k_scale).exp().clamp(*K_RANGE)
        return self.k_base

    def current_slope(self) -> Tensor:
        """The slope of the current training step (random models drawn in ``before_step``)
        while gradients are recorded, else the evaluation slope; ``(M,)``."""
        k = self.slope()
        if self._k_step is not None and torch.is_grad_enabled() and self.training:
            k = torch.where(self.random, self._k_step, k)
        return k

    def before_step(self, step: int) -> None:
        if bool(self.random.any()):
            self._k_step = random_slopes(self.n_models, step, self.seed, self.gray_zone,
                                         self.x0.device)

    def scale(self) -> Tensor:
        um = self.unit_model
        return cutoff_scale(self.index, self.x0[um], self.current_slope()[um])  # (H,)

    def penalty(self) -> Tensor:
        p = cutoff_integral(self.x0.double(), self.current_slope().double(), self.width)
        return (self.lam * p).float()  # (M,)

    def model_params(self, m: int) -> list[tuple[str, Tensor, Tensor]]:
        out = [("x0", self.x0.detach()[m:m + 1], self.x0.grad[m:m + 1])]
        if self.learn_k:
            out.append(("log_k", self.log_k.detach()[m:m + 1], self.log_k.grad[m:m + 1]))
        return out

    # -------------------------------------------------------------- records
    def _reset_grad_stats(self) -> None:
        self._g_sum: Tensor | None = None  # (M,) float64 on the parameters' device
        self._g_sq: Tensor | None = None
        self._g_n = 0

    def after_backward(self) -> None:
        g = self.x0.grad.detach().double()  # (M,); stays on the device (no sync per step)
        if self._g_sum is None:
            self._g_sum, self._g_sq = torch.zeros_like(g), torch.zeros_like(g)
        self._g_sum += g
        self._g_sq += g * g
        self._g_n += 1

    def epoch_records(self) -> list[tuple[int, str, object]]:
        x0 = self.x0.detach().double().cpu().tolist()
        n = max(self._g_n, 1)
        if self._g_sum is None:
            mean = std = torch.full((self.n_models,), float("nan"), dtype=torch.float64)
        else:
            mean = (self._g_sum / n).cpu()
            std = (self._g_sq.cpu() / n - mean * mean).clamp(min=0).sqrt()
        k = self.slope().detach().double().cpu().tolist()
        rows = []
        for m in range(self.n_models):
            rows += [(m, "x0", x0[m]), (m, "size_grad", float(mean[m])),
                     (m, "size_grad_std", float(std[m]))]
            if self.learn_k:
                rows.append((m, "k", k[m]))
        self._reset_grad_stats()
        return rows
