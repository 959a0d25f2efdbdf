"""The training engine: many models, one minibatch stream, streamed statistics, resumable runs.

Public API::

    from widthlab.engine import Engine, TrainConfig, train, evaluate
    from widthlab.engine.stats import RunningCovariance, RunningMoments
"""

from widthlab.engine.optim import BankOptimizer
from widthlab.engine.stats import RunningCovariance, RunningMoments
from widthlab.engine.trainer import (
    Engine,
    EvalResult,
    TrainConfig,
    epoch_order,
    evaluate,
    load_bank,
    resolve_device,
    train,
)

__all__ = ["BankOptimizer", "Engine", "EvalResult", "RunningCovariance", "RunningMoments",
           "TrainConfig", "epoch_order", "evaluate", "load_bank", "resolve_device",
           "train"]
