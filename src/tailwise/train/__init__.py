"""Training-time algorithms and the loop they plug into."""

from tailwise.train.loop import Callback, History, evaluate, fit
from tailwise.train.regularizers import (
    L2,
    TABLE_4_2,
    Hyperparameters,
    L2Stopped,
    L2StoppedSelective,
    Metric,
    Regularizer,
    RegularizerStats,
    SelectiveL2,
    TimeUnit,
    fit_regularized,
    regularized_step,
    selection_mask,
)

__all__ = [
    "L2",
    "TABLE_4_2",
    "Callback",
    "History",
    "Hyperparameters",
    "L2Stopped",
    "L2StoppedSelective",
    "Metric",
    "Regularizer",
    "RegularizerStats",
    "SelectiveL2",
    "TimeUnit",
    "evaluate",
    "fit",
    "fit_regularized",
    "regularized_step",
    "selection_mask",
]
