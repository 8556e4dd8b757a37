"""Fully connected classifier with stable parameter names."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """A parameter-free activation module from its name (a key of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _check_positive(where: str, name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


def _checked_architecture(model: nn.Module, arguments: dict[str, Any]) -> dict[str, Any]:
    """``{"class": <name>, **arguments}`` after checking that the arguments rebuild ``model``.

    ``arguments`` are read from the live layers, so a model whose widths were changed (e.g. by
    channel pruning) is still described when its class can express the new widths; when it
    cannot (say, unequal widths where the constructor takes one), this raises ``ValueError``
    rather than describe a different network. The check builds a twin on the meta device
    (no memory, no random numbers drawn) and compares state_dict keys and shapes.
    """
    name = type(model).__name__
    with torch.device("meta"):
        twin = type(model)(**arguments)
    actual = {}
    for key, value in model.state_dict().items():
        # torch.nn.utils.prune keeps `X_orig` (shape of X) and `X_mask`: compare as X.
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in model.state_dict():
            continue
        actual[key.removesuffix("_orig")] = tuple(value.shape)
    rebuilt = {key: tuple(value.shape) for key, value in twin.state_dict().items()}
    if actual != rebuilt:
        # The first differing key in state_dict order (usually the layer that was changed).
        key = next(key for key in [*actual, *rebuilt] if actual.get(key) != rebuilt.get(key))
        raise ValueError(
            f"{name}: its constructor arguments no longer describe this model (was it pruned "
            f"unevenly?): {key} is {actual.get(key)} here but {rebuilt.get(key)} when rebuilt "
            f"from {arguments}"
        )
    return {"class": name, **arguments}


class MLP(nn.Module):
    """Multi-layer perceptron: ``Linear -> activation`` per hidden width, then a ``Linear`` head.

    Layer ``i`` (0-based, the head is ``i = len(hidden)``) is ``self.layers[i]`` with state_dict
    keys ``layers.{i}.weight`` of shape (out_i, in_i) and ``layers.{i}.bias`` of shape (out_i,).
    The activation has no parameters, so these are the only keys.

    Input (N, in_features), or (N, *) with the trailing dimensions flattening to
    ``in_features`` (e.g. images (N, 1, 8, 8) for ``in_features=64``); output logits
    (N, num_classes).

    >>> import torch
    >>> model = MLP(64, [128, 64], 10)
    >>> [tuple(p.shape) for p in model.parameters()][::2]
    [(128, 64), (64, 128), (10, 64)]
    >>> tuple(model(torch.zeros(5, 1, 8, 8)).shape)
    (5, 10)
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        *,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_positive("MLP", "in_features", in_features)
        _check_positive("MLP", "num_classes", num_classes)
        for width in hidden:
            _check_positive("MLP", "each hidden width", width)
        self.in_features = in_features
        self.hidden = tuple(hidden)
        self.num_classes = num_classes
        widths = [in_features, *self.hidden, num_classes]
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=bias) for n_in, n_out in itertools.pairwise(widths)
        )
        self.activation = make_activation(activation)
        self.activation_name = activation

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) of inputs (N, in_features) or (N, *) flattening to it."""
        if x.ndim < 2:
            raise ValueError(f"MLP: input must have a batch dimension, got shape {tuple(x.shape)}")
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP: expected {self.in_features} features per sample, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        *hidden_layers, head = self.layers
        for layer in hidden_layers:
            x = self.activation(layer(x))
        out: Tensor = head(x)
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments plus ``"class": "MLP"``, read from the layers.

        :func:`tailwise.models.build_model` rebuilds the same architecture from it (also after
        pruning hidden units, since the widths are read from the live layers).

        >>> MLP(64, [32], 10).architecture()["hidden"]
        [32]
        """
        linears = [layer for layer in self.layers if isinstance(layer, nn.Linear)]
        return _checked_architecture(
            self,
            {
                "in_features": linears[0].in_features,
                "hidden": [layer.out_features for layer in linears[:-1]],
                "num_classes": linears[-1].out_features,
                "activation": self.activation_name,
                "bias": linears[0].bias is not None,
            },
        )
