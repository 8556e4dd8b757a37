"""tailwise: look inside trained neural networks layer by layer.

The public API is re-exported here; see the README for runnable examples.
"""

from typing import Any

from tailwise._errors import UsageError
from tailwise.report import write_html
from tailwise.spectral.analyze import COLUMNS, analyze, summary
from tailwise.spectral.esd import eigenvalues
from tailwise.spectral.powerlaw import PowerLawFit, fit_power_law
from tailwise.tails import analyze_tails, mmo_alpha, sample_sas
from tailwise.weights import LayerKind, LayerWeights, WeightsError, iter_layers, list_layers

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # load_model needs the pruning stack (Torch-Pruning): imported on first use only, so that
    # `import tailwise` and `tailwise analyze` stay quick.
    if name == "load_model":
        from tailwise.loading import load_model

        return load_model
    raise AttributeError(f"module 'tailwise' has no attribute {name!r}")


__all__ = [
    "COLUMNS",
    "LayerKind",
    "LayerWeights",
    "PowerLawFit",
    "UsageError",
    "WeightsError",
    "__version__",
    "analyze",
    "analyze_tails",
    "eigenvalues",
    "fit_power_law",
    "iter_layers",
    "list_layers",
    "load_model",
    "mmo_alpha",
    "sample_sas",
    "summary",
    "write_html",
]
