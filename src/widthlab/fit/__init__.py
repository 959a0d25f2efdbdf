"""Mixture models for per-neuron activation stds: tell near-zero "useless" neurons from useful ones.

Two families, fitted by expectation-maximisation in log space, with scikit-learn conventions
(``fit`` returns self, fitted attributes end in ``_``)::

    import numpy as np
    from widthlab.fit import ExponentialNormalMixture, GammaMixture, fit_many

    stds = np.abs(np.random.default_rng(0).normal(0.5, 0.1, 500))  # one value per neuron
    gm = GammaMixture(n_components=2).fit(stds)
    gm.weights_, gm.shapes_, gm.scales_      # component 0 has the lowest mean
    useless = gm.predict(stds) == 0          # neurons in the near-zero component
    gm.score(stds), gm.bic(stds)             # mean log-likelihood, BIC

    en = ExponentialNormalMixture().fit(stds)  # exponential (near zero) + normal (useful)
    en.rate_, en.means_, en.stds_

    # many arrays (one per width x replicate) in one batched EM:
    models = fit_many(GammaMixture(), [stds, stds[:300]])
    table = fit_many(GammaMixture(), [stds, stds[:300]], as_frame=True)

Exact zeros (dead neurons) are excluded from the fit and counted in ``n_zeros_`` by default
(``zeros="exclude"``, as the journal did); ``zeros="error"`` refuses them. NaN/inf, negative
values, fewer than ``max(10, 3 * n_components)`` positive values, or all-equal values raise
``ValueError``. A :class:`ConvergenceWarning` is emitted when EM hits ``max_iter``.
"""

from __future__ import annotations

from widthlab.fit._em import ConvergenceWarning
from widthlab.fit.mixtures import (
    ExponentialNormalMixture,
    GammaMixture,
    fit_many,
    solve_gamma_shape,
)

__all__ = [
    "ConvergenceWarning",
    "ExponentialNormalMixture",
    "GammaMixture",
    "fit_many",
    "solve_gamma_shape",
]
