"""Seeded samples from known mixtures for the fit tests."""

from __future__ import annotations

import numpy as np

GAMMA_CASES = {
    "balanced": ((0.3, 0.7), (1.5, 20.0), (0.02, 0.025)),
    "rare_low": ((0.1, 0.9), (2.0, 30.0), (0.01, 0.02)),
    "rare_high": ((0.9, 0.1), (1.2, 15.0), (0.05, 0.1)),
}
# (weights (exp, normal), exponential rate, normal mean, normal std)
EXPNORMAL_CASES = {
    "balanced": ((0.3, 0.7), 20.0, 0.5, 0.1),
    "rare_low": ((0.1, 0.9), 50.0, 0.6, 0.08),
    "rare_high": ((0.9, 0.1), 10.0, 1.0, 0.15),
}


def draw_gamma(case: str, n: int, seed: int = 0) -> np.ndarray:
    w, shapes, scales = GAMMA_CASES[case]
    rng = np.random.default_rng(seed)
    lab = rng.choice(len(w), size=n, p=w)
    return rng.gamma(np.array(shapes)[lab], np.array(scales)[lab])


def draw_expnormal(case: str, n: int, seed: int = 0) -> np.ndarray:
    w, rate, mu, sd = EXPNORMAL_CASES[case]
    rng = np.random.default_rng(seed)
    lab = rng.random(n) < w[0]
    return np.where(lab, rng.exponential(1.0 / rate, n), np.abs(rng.normal(mu, sd, n)))
