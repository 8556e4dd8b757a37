"""Curvature of the loss (source 004): Hessian-vector products, spectra, trace and density."""

from tailwise.hessian.hvp import HVPMethod, hvp, named_parameters

__all__ = ["HVPMethod", "hvp", "named_parameters"]
