"""Training-time algorithms and the loop they plug into."""

from tailwise.train.layerwise import (
    LR_MAPPINGS,
    LayerwiseLR,
    LRMapping,
    allocate_lr,
    layer_param_groups,
)
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
    "LR_MAPPINGS",
    "TABLE_4_2",
    "Callback",
    "History",
    "Hyperparameters",
    "L2Stopped",
    "L2StoppedSelective",
    "LRMapping",
    "LayerwiseLR",
    "Metric",
    "Regularizer",
    "RegularizerStats",
    "SelectiveL2",
    "TimeUnit",
    "allocate_lr",
    "evaluate",
    "fit",
    "fit_regularized",
    "layer_param_groups",
    "regularized_step",
    "selection_mask",
]
