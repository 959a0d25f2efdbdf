"""Loss spikes in a minibatch-loss series (the optimizer study: is Adam unstable at low loss?).

A *spike* is a batch whose loss exceeds ``factor`` times the running median of the ``window``
batches before it. The median (not the mean) keeps one spike from raising the bar for the next
ones; comparing with the *preceding* batches only means the counter needs no future data.
The first ``window`` batches have no reference and are never spikes.

Default ``factor = 3`` and ``window = 50``: minibatch noise at batch size 128 stays well under
3x the median of the last 50 batches for a well-behaved run (a test checks that a smooth noisy
curve gives no spike), while the sudden jumps the journal worried about are an order of
magnitude.

Example::

    from widthlab.metrics.spikes import find_spikes, spikes_per_epoch

    idx = find_spikes(losses)                       # indices of the spiking batches
    counts = spikes_per_epoch(losses, steps_per_epoch=469)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from widthlab.errors import UsageError

FACTOR = 3.0
WINDOW = 50


def running_median(losses, window: int = WINDOW) -> np.ndarray:
    """``out[t]`` = median of ``losses[t - window : t]`` (NaN for ``t < window``)."""
    x = np.asarray(losses, dtype=np.float64).ravel()
    if window < 1:
        raise UsageError(f"window must be >= 1, got {window}")
    out = np.full(x.shape, np.nan)
    if len(x) > window:
        out[window:] = np.median(sliding_window_view(x, window)[:-1], axis=1)
    return out


def find_spikes(losses, factor: float = FACTOR, window: int = WINDOW) -> np.ndarray:
    """Indices of the batches whose loss is above ``factor`` x the running median before it.

    Parameters
    ----------
    losses : array-like of shape (n_batches,)
        Minibatch losses in training order (non-finite values are spikes when a reference
        exists).
    factor : float > 1
    window : int >= 1
    """
    if not factor > 1:
        raise UsageError(f"factor must be > 1 (a spike is a jump above the running median), "
                         f"got {factor}")
    x = np.asarray(losses, dtype=np.float64).ravel()
    med = running_median(x, window)
    ref = ~np.isnan(med)
    with np.errstate(invalid="ignore"):
        hit = ref & ((x > factor * med) | ~np.isfinite(x))
    return np.flatnonzero(hit)


def spikes_per_epoch(losses, steps_per_epoch: int, factor: float = FACTOR,
                     window: int = WINDOW) -> np.ndarray:
    """Spike count of each epoch of a series that concatenates whole epochs."""
    x = np.asarray(losses, dtype=np.float64).ravel()
    if steps_per_epoch < 1 or len(x) % steps_per_epoch:
        raise UsageError(f"{len(x)} batch losses are not whole epochs of {steps_per_epoch} "
                         "steps; pass the concatenated per-epoch series")
    counts = np.zeros(len(x) // steps_per_epoch, dtype=np.int64)
    np.add.at(counts, find_spikes(x, factor, window) // steps_per_epoch, 1)
    return counts
