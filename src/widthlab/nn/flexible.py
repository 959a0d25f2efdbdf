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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widthlab.errors import UsageError
from widthlab.nn._cutoff import (
    GRAY_ZONE_FACTOR,
    PRUNE_THRESHOLD,
    _check_gray_zone,
    _check_k,
    cutoff_integral,
    cutoff_scale,
    cutoff_scale_array,
    random_activation,
    random_slopes,
)
from widthlab.nn._cutoff import K_RANGE as K_RANGE
from widthlab.nn._flexible_cutoff import FlexibleCutoff

__all__ = ["GRAY_ZONE_FACTOR", "PRUNE_THRESHOLD", "FlexibleCutoff", "FlexibleLinear", "FlexibleMLP",
           "cutoff_integral", "cutoff_scale", "cutoff_scale_array", "random_activation",
           "random_slopes"]


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


