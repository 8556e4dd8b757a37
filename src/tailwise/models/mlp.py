"""Fully connected classifier with stable parameter names."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from tailwise.models._checks import check_positive, checked_architecture

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
        check_positive("MLP", "in_features", in_features)
        check_positive("MLP", "num_classes", num_classes)
        for width in hidden:
            check_positive("MLP", "each hidden width", width)
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
        return checked_architecture(
            self,
            {
                "in_features": linears[0].in_features,
                "hidden": [layer.out_features for layer in linears[:-1]],
                "num_classes": linears[-1].out_features,
                "activation": self.activation_name,
                "bias": linears[0].bias is not None,
            },
        )
