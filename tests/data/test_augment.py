"""tailwise.data.augment: crops and flips exact, AugMix's operations against PIL, AugMix's
mixing (Hendrycks et al. 2020, Algorithm 1), and per-(seed, epoch, index) determinism."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tailwise._errors import UsageError
from tailwise.data import (
    AUGMENTATIONS,
    AUGMIX_OPS,
    AugmentedDataset,
    augmix,
    augmix_weights,
    random_crop,
    random_hflip,
)
from tailwise.data.augment import (
    _gamma,
    autocontrast,
    equalize,
    posterize,
    rotate,
    shear_x,
    shear_y,
    solarize,
    translate_x,
    translate_y,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------ crop and flip


def _offset(out: torch.Tensor, padded: torch.Tensor, size: int) -> tuple[int, int] | None:
    """The (row, column) of the window of ``padded`` equal to ``out``, if any."""
    for top in range(padded.shape[-2] - size + 1):
        for left in range(padded.shape[-1] - size + 1):
            if torch.equal(out, padded[..., top : top + size, left : left + size]):
                return top, left
    return None


def test_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    x = torch.arange(1, 2 * 5 * 5 + 1, dtype=torch.float32).reshape(2, 5, 5)  # no zeros
    padded = F.pad(x, (2, 2, 2, 2))
    seen = set()
    for seed in range(200):
        out = random_crop(x, 5, padding=2, generator=gen(seed))
        assert out.shape == (2, 5, 5)
        offset = _offset(out, padded, 5)
        assert offset is not None  # exactly a window: content shifted, border zero
        seen.add(offset)
    assert seen == {(r, c) for r in range(5) for c in range(5)}  # every shift is drawn


def test_crop_by_hand() -> None:
    """Offsets drawn as documented (rows of the batch, then columns): the exact output."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4) + 1
    g = gen(7)
    top = torch.randint(0, 3, (1,), generator=g)
    left = torch.randint(0, 3, (1,), generator=g)
    out = random_crop(x, 4, padding=1, generator=gen(7))
    expected = F.pad(x, (1, 1, 1, 1))[..., top : top + 4, left : left + 4]
    assert torch.equal(out, expected)


def test_crop_of_a_batch_draws_per_image_and_keeps_dtype() -> None:
    x = torch.ones(64, 3, 8, 8, dtype=torch.float64)
    out = random_crop(x, (6, 7), padding=1, generator=gen(0))
    assert out.shape == (64, 3, 6, 7) and out.dtype == torch.float64
    zeros_per_image = (out == 0).flatten(1).sum(1)
    assert len(set(zeros_per_image.tolist())) > 1  # different shifts in one batch
    assert torch.equal(random_crop(x, 8, padding=0, generator=gen(1)), x)  # nothing to move


def test_crop_is_deterministic_given_the_generator() -> None:
    x = torch.rand(16, 3, 32, 32, generator=gen(0))
    a = random_crop(x, 32, generator=gen(5))
    assert torch.equal(a, random_crop(x, 32, generator=gen(5)))
    assert not torch.equal(a, random_crop(x, 32, generator=gen(6)))


def test_flip_exact() -> None:
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(random_hflip(x, p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, p=0.0), x)
    batch = torch.rand(1000, 1, 2, 3, generator=gen(0))
    out = random_hflip(batch, generator=gen(1))
    flipped = (out == batch.flip(-1)).flatten(1).all(1)
    kept = (out == batch).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 0.45 < float(flipped.float().mean()) < 0.55
    assert torch.equal(out, random_hflip(batch, generator=gen(1)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random_crop(torch.zeros(4, 4), 4), r"expected an image .* got \(4, 4\)"),
        (lambda: random_crop(torch.zeros(1, 4, 4), 9, padding=2), "does not fit"),
        (lambda: random_crop(torch.zeros(1, 4, 4), 4, padding=-1), "padding must be"),
        (lambda: random_crop(torch.zeros(1, 4, 4), "4"), "size must be"),
        (lambda: random_hflip(torch.zeros(1, 4, 4), p=2), "p must be"),
    ],
)
def test_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call()


# ----------------------------------------------------------- AugMix operations vs PIL


def _image(seed: int, smooth: bool = False) -> np.ndarray:
    if smooth:
        yy, xx = np.mgrid[0:32, 0:32]
        plane = 127 + 100 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0)
        return np.stack([plane, plane[::-1], plane.T], -1).astype(np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


def _levels(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.int64).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_operations_match_pil_exactly(seed: int) -> None:
    pil = pytest.importorskip("PIL.Image")
    ops = pytest.importorskip("PIL.ImageOps")
    image = _image(seed)
    image[..., 1] = np.clip(image[..., 1], 40, 90)  # a narrow channel for autocontrast
    x = _tensor(image)
    # PIL truncates the stretched levels (255 * 0.99999 -> 254): one level apart at most.
    stretched = _levels(autocontrast(x)) - np.asarray(ops.autocontrast(pil.fromarray(image)))
    assert stretched.min() >= 0 and stretched.max() <= 1
    cases = [
        (equalize(x), ops.equalize(pil.fromarray(image))),
        (posterize(x, 3), ops.posterize(pil.fromarray(image), 3)),
        (posterize(x, 1), ops.posterize(pil.fromarray(image), 1)),
        (solarize(x, 200), ops.solarize(pil.fromarray(image), 200)),
        (solarize(x, 0), ops.solarize(pil.fromarray(image), 0)),
    ]
    for ours, reference in cases:
        np.testing.assert_array_equal(_levels(ours), np.asarray(reference))


def test_equalize_and_autocontrast_leave_flat_channels() -> None:
    x = torch.full((3, 8, 8), 0.5)
    assert torch.equal(autocontrast(x), x)
    torch.testing.assert_close(equalize(x), (x * 255).round() / 255)
    assert torch.equal(solarize(x, 256), (x * 255).round() / 255)


def test_integer_translations_and_quarter_turns_are_exact() -> None:
    x = torch.rand(2, 3, 6, 5, generator=gen(0))
    shifted = translate_x(x, 2)
    torch.testing.assert_close(shifted[..., :3], x[..., 2:], atol=1e-6, rtol=0)
    assert float(shifted[..., 3:].abs().max()) < 1e-6
    down = translate_y(x, -1)
    torch.testing.assert_close(down[..., 1:, :], x[..., :-1, :], atol=1e-6, rtol=0)
    assert float(down[..., 0, :].abs().max()) < 1e-6
    square = torch.rand(3, 7, 7, generator=gen(1))
    # PIL's rotate(90) is counter-clockwise: np.rot90 / torch.rot90 with k = 1.
    torch.testing.assert_close(
        rotate(square, 90), torch.rot90(square, 1, (-2, -1)), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        rotate(square, -90), torch.rot90(square, -1, (-2, -1)), atol=1e-5, rtol=0
    )
    # A shear of 2 about the corner, pixel centres at i + 0.5: row y takes the input at
    # x + 2 (y + 0.5) = x + 2 y + 1, a whole-pixel shift.
    sheared = shear_x(square, 2.0)
    for row in range(3):
        shift = 2 * row + 1
        torch.testing.assert_close(
            sheared[:, row, : 7 - shift], square[:, row, shift:], atol=1e-5, rtol=0
        )
    torch.testing.assert_close(shear_y(square, 1.0), shear_x(square.mT, 1.0).mT, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "ours", "data"),
    [
        ("rotate", lambda x: rotate(x, 17), None),
        ("shear_x", lambda x: shear_x(x, 0.2), (1, 0.2, 0, 0, 1, 0)),
        ("shear_y", lambda x: shear_y(x, -0.25), (1, 0, 0, -0.25, 1, 0)),
        ("translate_x", lambda x: translate_x(x, 3), (1, 0, 3, 0, 1, 0)),
    ],
)
def test_geometric_operations_match_pil_away_from_the_fill(
    name: str, ours: Any, data: tuple[float, ...] | None
) -> None:
    """PIL resamples bilinearly too but fills any pixel whose source is outside; we blend
    with the zero fill there. Inside, the two agree within one 8-bit level."""
    pil = pytest.importorskip("PIL.Image")
    image = _image(3, smooth=True)
    source = pil.fromarray(image)
    if data is None:
        reference = source.rotate(17, resample=pil.BILINEAR)
        mask_ref = pil.fromarray(np.full((32, 32), 255, np.uint8)).rotate(17)
    else:
        reference = source.transform((32, 32), pil.AFFINE, data, resample=pil.BILINEAR)
        mask_ref = pil.fromarray(np.full((32, 32), 255, np.uint8)).transform(
            (32, 32), pil.AFFINE, data
        )
    inside = np.asarray(mask_ref) == 255
    for _ in range(2):  # two pixels away from the fill
        inside = inside & np.roll(inside, 1, 0) & np.roll(inside, -1, 0)
        inside = inside & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
    ours_levels = (ours(_tensor(image)) * 255).permute(1, 2, 0).numpy()
    difference = np.abs(ours_levels - np.asarray(reference, dtype=np.float64))[inside]
    assert inside.sum() > 250
    assert difference.max() <= 1.0 + 1e-4, name


def test_operations_work_on_batches_like_on_images() -> None:
    batch = torch.rand(3, 3, 8, 8, generator=gen(0))
    for op in (autocontrast, equalize, lambda x: rotate(x, 30), lambda x: posterize(x, 2)):
        stacked = torch.stack([op(image) for image in batch])
        torch.testing.assert_close(op(batch), stacked, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ AugMix


def test_gamma_draws_follow_the_gamma_law() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    g = gen(0)
    for shape in (0.5, 1.0, 3.0):
        draws = [_gamma(shape, g) for _ in range(3000)]
        assert scipy_stats.kstest(draws, "gamma", args=(shape,)).pvalue > 0.01, shape


@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_mixing_weights_are_dirichlet_and_beta(alpha: float) -> None:
    g = gen(1)
    draws = [augmix_weights(3, alpha, g) for _ in range(2000)]
    weights = torch.stack([w for w, _ in draws])
    skips = torch.tensor([m for _, m in draws], dtype=torch.float64)
    assert bool((weights >= 0).all()) and bool(((skips >= 0) & (skips <= 1)).all())
    torch.testing.assert_close(weights.sum(1), torch.ones(2000, dtype=torch.float64))
    # Dirichlet(alpha, alpha, alpha): mean 1/3, variance (1/3)(2/3)/(3 alpha + 1);
    # Beta(alpha, alpha): mean 1/2, variance 1/(4 (2 alpha + 1)). 2000 draws: within 10%.
    torch.testing.assert_close(
        weights.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.02, rtol=0
    )
    assert math.isclose(float(weights[:, 0].var()), (2 / 9) / (3 * alpha + 1), rel_tol=0.1)
    assert math.isclose(float(skips.mean()), 0.5, abs_tol=0.02)
    assert math.isclose(float(skips.var()), 1 / (4 * (2 * alpha + 1)), rel_tol=0.1)


def test_augmix_output_shape_range_and_change() -> None:
    x = torch.rand(4, 3, 16, 16, generator=gen(0))
    out = augmix(x, generator=gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert all(not torch.equal(a, b) for a, b in zip(out, x, strict=True))
    assert torch.equal(out, augmix(x, generator=gen(1)))
    assert not torch.equal(out, augmix(x, generator=gen(2)))
    single = augmix(x[0], generator=gen(1))
    assert torch.equal(single, out[0])  # the first image of a batch draws first


def test_augmix_is_the_convex_mix_of_algorithm_1() -> None:
    """With one operation and depth 1 every chain is that operation, so
    x_augmix = (1 - m) x + m op(x) for the m drawn first from the same generator."""
    x = torch.rand(3, 8, 8, generator=gen(0)) * 0.5 + 0.25
    for seed in range(5):
        weights, skip = augmix_weights(3, 1.0, gen(seed))
        assert abs(float(weights.sum()) - 1) < 1e-12
        out = augmix(x, depth=1, generator=gen(seed), ops=("autocontrast",))
        expected = (1 - skip) * x + skip * autocontrast(x)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_augmix_draws_every_operation() -> None:
    assert set(AUGMIX_OPS) == {
        "autocontrast",
        "equalize",
        "posterize",
        "rotate",
        "solarize",
        "shear_x",
        "shear_y",
        "translate_x",
        "translate_y",
    }
    x = torch.rand(3, 8, 8, generator=gen(0))
    for name in AUGMIX_OPS:
        out = augmix(x, severity=10, width=1, depth=3, generator=gen(1), ops=(name,))
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"severity": 0}, "severity must be"),
        ({"severity": 11}, "severity must be"),
        ({"width": 0}, "width must be"),
        ({"alpha": 0.0}, "alpha must be"),
        ({"depth": 1.5}, "depth must be"),
        ({"ops": ("blur",)}, "ops must be names of"),
    ],
)
def test_augmix_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        augmix(torch.rand(3, 8, 8), **kwargs)


def test_augmix_refuses_normalized_images() -> None:
    with pytest.raises(UsageError, match=r"values in \[0, 1\] \(normalize after augmenting\)"):
        augmix(torch.randn(3, 8, 8, generator=gen(0)))


# ----------------------------------------------------------------- AugmentedDataset


def _dataset(n: int = 12) -> TensorDataset:
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=gen(0)), torch.arange(n))


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_same_seed_epoch_and_index_same_augmentation(name: str) -> None:
    base = _dataset()
    a = AugmentedDataset(base, name, seed=3)
    b = AugmentedDataset(base, name, seed=3)
    first = [a[i][0] for i in range(len(base))]
    # Any order (here reversed) gives each example the same draws.
    for i in reversed(range(len(base))):
        assert torch.equal(b[i][0], first[i])
        assert int(b[i][1]) == i
    assert not torch.equal(first[0], first[1])
    a.set_epoch(1)
    second = [a[i][0] for i in range(len(base))]
    assert all(not torch.equal(u, v) for u, v in zip(first, second, strict=True))
    a.set_epoch(0)  # back to epoch 0 (a resumed run): the same draws again
    assert all(torch.equal(a[i][0], first[i]) for i in range(len(base)))
    other_seed = AugmentedDataset(base, name, seed=4)
    assert not torch.equal(other_seed[0][0], first[0])


def test_through_a_shuffling_loader() -> None:
    base = _dataset()
    data = AugmentedDataset(base, "standard", seed=0)
    direct = torch.stack([data[i][0] for i in range(len(base))])
    loader = DataLoader(data, batch_size=5, shuffle=True, generator=gen(9))
    for images, labels in loader:
        assert torch.equal(images, direct[labels])


def test_a_callable_transform_gets_a_seeded_generator() -> None:
    calls: list[float] = []

    def noise(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        draw = float(torch.rand((), generator=generator))
        calls.append(draw)
        return image + draw

    data = AugmentedDataset(_dataset(), noise, seed=1, epoch=2)
    assert data.epoch == 2 and "noise" in repr(data)
    a, b = data[5][0], data[5][0]
    assert torch.equal(a, b) and calls[0] == calls[1]
    assert len(data) == 12


def test_augmented_dataset_bad_arguments() -> None:
    with pytest.raises(UsageError, match="augment must be one of standard, augmix"):
        AugmentedDataset(_dataset(), "cutout")
    with pytest.raises(UsageError, match="or a callable"):
        AugmentedDataset(_dataset(), 3)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="seed must be"):
        AugmentedDataset(_dataset(), "standard", seed=-1)
    with pytest.raises(UsageError, match="epoch must be"):
        AugmentedDataset(_dataset(), "standard").set_epoch(-2)
