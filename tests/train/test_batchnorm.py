"""tailwise.train.recalibrate_batch_norm: BatchNorm statistics re-estimated for the weights a
model has now, against statistics computed by hand from the layer's inputs."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tailwise.train import recalibrate_batch_norm


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Dropout(0.5),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    ).double()


def batches(count: int, size: int = 8) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, 1, 6, 6, generator=gen, dtype=torch.float64), torch.zeros(size))
        for _ in range(count)
    ]


def test_statistics_are_the_average_of_the_batch_statistics_of_the_inputs() -> None:
    model = net()
    data = batches(3)
    with torch.no_grad():  # the BN inputs, with dropout off (eval mode)
        inputs = [model[0](x) for x, _ in data]
    means = torch.stack([z.mean(dim=(0, 2, 3)) for z in inputs])
    variances = torch.stack([z.var(dim=(0, 2, 3), unbiased=True) for z in inputs])
    model.train()
    momentum_before = model[2].momentum
    assert recalibrate_batch_norm(model, data) == 1
    bn = model[2]
    assert torch.allclose(bn.running_mean, means.mean(0), rtol=1e-10, atol=1e-12)
    assert torch.allclose(bn.running_var, variances.mean(0), rtol=1e-10, atol=1e-12)
    assert int(bn.num_batches_tracked) == 3
    assert model.training and model[1].training  # modes restored
    assert bn.momentum == momentum_before


def test_max_batches_and_eval_mode_restored() -> None:
    model = net().eval()
    recalibrate_batch_norm(model, batches(5), max_batches=2)
    assert int(model[2].num_batches_tracked) == 2
    assert not model.training and not model[2].training
    with pytest.raises(ValueError, match="max_batches"):
        recalibrate_batch_norm(model, batches(1), max_batches=0)


def test_dropout_stays_off_during_the_pass() -> None:
    first, second = net(), net()
    recalibrate_batch_norm(first, batches(2))
    torch.manual_seed(123)  # another dropout draw would change the statistics
    recalibrate_batch_norm(second, batches(2))
    assert torch.equal(first[2].running_mean, second[2].running_mean)


def test_a_model_without_batch_norm_is_left_alone() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    assert recalibrate_batch_norm(model, [(torch.randn(2, 3), torch.zeros(2))]) == 0
