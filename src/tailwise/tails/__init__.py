"""Entry-wise heavy tails of weights and their compressibility (source 003).

* :mod:`~tailwise.tails.estimators` -- tail-index estimators: MMO (univariate, multivariate,
  order-statistic) and Hill (:func:`hill_tail_index`).
* :mod:`~tailwise.tails.stable` -- alpha-stable samplers (iid symmetric, totally skewed,
  sub-Gaussian elliptic) and source 003's synthetic layers.
* :mod:`~tailwise.tails.compress` -- best-k-term approximation and relative lp compression
  errors, layer-wise and global.
* :mod:`~tailwise.tails.analyze` -- :func:`analyze_tails`, one row of tail indices per layer.
"""

from tailwise.tails.analyze import TAILS_COLUMNS, analyze_tails, layer_rows
from tailwise.tails.compress import (
    GlobalKeepRatios,
    best_k_term,
    compression_curve,
    compression_error,
    global_keep_ratios,
    keep_ratio_for_error,
)
from tailwise.tails.estimators import hill_tail_index, mmo_alpha, mmo_block_sizes
from tailwise.tails.stable import (
    sample_elliptic,
    sample_sas,
    sample_skewed_stable,
    synthetic_layer,
    synthetic_layers,
)

__all__ = [
    "TAILS_COLUMNS",
    "GlobalKeepRatios",
    "analyze_tails",
    "best_k_term",
    "compression_curve",
    "compression_error",
    "global_keep_ratios",
    "hill_tail_index",
    "keep_ratio_for_error",
    "layer_rows",
    "mmo_alpha",
    "mmo_block_sizes",
    "sample_elliptic",
    "sample_sas",
    "sample_skewed_stable",
    "synthetic_layer",
    "synthetic_layers",
]
