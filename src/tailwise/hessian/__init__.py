"""Curvature of the loss (source 004): Hessian-vector products, spectra, trace and density."""

from tailwise.hessian.eigen import EigenResult, top_eigenvalues
from tailwise.hessian.hvp import HVPMethod, hvp, named_parameters
from tailwise.hessian.operator import HessianOperator
from tailwise.hessian.plots import plot_density, plot_eigenvalues
from tailwise.hessian.trace import (
    SpectralDensity,
    TraceEstimate,
    hutchinson_trace,
    hutchpp_trace,
    spectral_density,
)

__all__ = [
    "EigenResult",
    "HVPMethod",
    "HessianOperator",
    "SpectralDensity",
    "TraceEstimate",
    "hutchinson_trace",
    "hutchpp_trace",
    "hvp",
    "named_parameters",
    "plot_density",
    "plot_eigenvalues",
    "spectral_density",
    "top_eigenvalues",
]
