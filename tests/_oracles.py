"""Test oracles shared by several test modules (importable: `pythonpath = ["tests"]`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call


def dense_hessian(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    names: Sequence[str] | None = None,
) -> Tensor:
    """(n, n) Hessian of loss_fn(model(inputs), targets) over the flattened parameters
    ``names`` (default all, in ``named_parameters`` order), by torch.autograd.functional."""
    theta = dict(model.named_parameters())
    names = list(theta) if names is None else list(names)
    shapes = [theta[name].shape for name in names]
    sizes = [theta[name].numel() for name in names]
    start = torch.cat([theta[name].detach().reshape(-1) for name in names])

    def loss_of(flat: Tensor) -> Tensor:
        pieces = torch.split(flat, sizes)
        values = {n: p.view(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
        return loss_fn(functional_call(model, values, (inputs,)), targets)

    hessian = torch.autograd.functional.hessian(loss_of, start, vectorize=True)
    assert isinstance(hessian, Tensor)
    return hessian
