"""Similarity of representations and of models (DESIGN.md ``similarity/``).

- :mod:`~tailwise.similarity.cka`: CKA and HSIC of two representations (linear / RBF kernel,
  biased / unbiased), and :class:`MinibatchCKA` for streams of batches.
- :mod:`~tailwise.similarity.layers`: :func:`layer_cka`, CKA between the layers of one or two
  models over a data stream, with :func:`cka_matrix` to pivot it.
- :mod:`~tailwise.similarity.plots`: :func:`plot_cka`, the heatmap of source 000 fig. 2.2.
- :mod:`~tailwise.similarity.compare`: :func:`compare`, two weight sources layer by layer.
"""

from tailwise.similarity.cka import Kernel, MinibatchCKA, cka, hsic
from tailwise.similarity.compare import COMPARE_COLUMNS, COMPARE_METRICS, compare
from tailwise.similarity.layers import CKA_COLUMNS, cka_matrix, default_layers, layer_cka
from tailwise.similarity.plots import plot_cka

__all__ = [
    "CKA_COLUMNS",
    "COMPARE_COLUMNS",
    "COMPARE_METRICS",
    "Kernel",
    "MinibatchCKA",
    "cka",
    "cka_matrix",
    "compare",
    "default_layers",
    "hsic",
    "layer_cka",
    "plot_cka",
]
