"""Curvature of the loss (source 004): Hessian-vector products, spectra, trace and density."""

from tailwise.hessian.block import BlockLanczosResult, block_lanczos
from tailwise.hessian.eigen import EigenMethod, EigenResult, EigenSolver, top_eigenvalues
from tailwise.hessian.hvp import HVPFallback, HVPMethod, hvp, named_parameters, restored_buffers
from tailwise.hessian.operator import RETAINED_GRAPH_SHARE, HessianOperator
from tailwise.hessian.plots import plot_density, plot_eigenvalues
from tailwise.hessian.summarize import HessianSummary, summarize
from tailwise.hessian.trace import (
    SpectralDensity,
    TraceEstimate,
    hutchinson_trace,
    hutchpp_trace,
    spectral_density,
)

__all__ = [
    "RETAINED_GRAPH_SHARE",
    "BlockLanczosResult",
    "EigenMethod",
    "EigenResult",
    "EigenSolver",
    "HVPFallback",
    "HVPMethod",
    "HessianOperator",
    "HessianSummary",
    "SpectralDensity",
    "TraceEstimate",
    "block_lanczos",
    "hutchinson_trace",
    "hutchpp_trace",
    "hvp",
    "named_parameters",
    "plot_density",
    "plot_eigenvalues",
    "restored_buffers",
    "spectral_density",
    "summarize",
    "top_eigenvalues",
]
