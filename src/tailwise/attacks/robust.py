"""Natural and robust accuracy of a classifier: 002's A1-A4 in one table (source 002 §4.2.3).

002 reports, for each trained network, the accuracy on clean test images (A1) and under the
FGSM (A2), IFGSM^20 (A3) and C&W (A4) attacks. :func:`robust_accuracy` computes any such
list of attacks (names as in :mod:`tailwise.attacks.spec`) over a data set in one pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from tailwise._errors import UsageError, first_line
from tailwise._modules import model_device
from tailwise._progress import progress_task
from tailwise._seeds import generator as make_generator
from tailwise._seeds import seeded
from tailwise._threads import torch_work
from tailwise.attacks._common import LossFn, attack_mode, check_batch, check_count
from tailwise.attacks.eot import EOT
from tailwise.attacks.spec import AttackSpec, parse_attack

__all__ = ["ROBUST_COLUMNS", "robust_accuracy"]

ROBUST_COLUMNS = (
    "attack",
    "eps",
    "accuracy",
    "correct",
    "examples",
    "linf",
    "l2",
    "seconds",
    "status",
    "reason",
)
"""Columns of :func:`robust_accuracy`, in order (documented there)."""

DEFAULT_ATTACKS = ("natural", "fgsm", "ifgsm20", "cw")


@dataclass
class _Tally:
    """Running totals of one attack over the batches."""

    correct: int = 0
    examples: int = 0
    linf: float = 0.0
    l2_sum: float = 0.0
    seconds: float = 0.0
    reason: str = ""

    def add(self, hits: Tensor, delta: Tensor, seconds: float) -> None:
        flat = delta.detach().flatten(1).to(torch.float64)
        self.correct += int(hits.sum())
        self.examples += int(hits.numel())
        if flat.numel():
            self.linf = max(self.linf, float(flat.abs().max()))
        self.l2_sum += float(flat.norm(dim=1).sum())
        self.seconds += seconds

    def row(self, spec: AttackSpec) -> dict[str, Any]:
        done = self.examples > 0 and not self.reason
        return {
            "attack": spec.name,
            "eps": spec.eps if spec.bounded else math.nan,
            "accuracy": self.correct / self.examples if done else math.nan,
            "correct": self.correct,
            "examples": self.examples,
            "linf": self.linf if done else math.nan,
            "l2": self.l2_sum / self.examples if done else math.nan,
            "seconds": self.seconds,
            "status": "failed" if self.reason else "ok",
            "reason": self.reason,
        }


def robust_accuracy(
    model: nn.Module,
    data: Iterable[Sequence[Tensor]],
    attacks: Sequence[str | AttackSpec] = DEFAULT_ATTACKS,
    *,
    eps: float = 8 / 255,
    alpha: float | None = None,
    c: float = 1.0,
    kappa: float = 0.0,
    lr: float = 0.01,
    eot_samples: int = 1,
    loss_fn: LossFn | None = None,
    seed: int | None = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy of ``model`` on clean inputs and under each attack: one row per attack.

    Source 002 §4.2.3 (A1 natural, A2 FGSM, A3 IFGSM^20, A4 C&W). Every batch is attacked
    with the model's current weights in eval mode (every module's mode and every parameter's
    ``requires_grad`` are restored afterwards; no gradient reaches a parameter), and the
    adversarial inputs are classified in eval mode. The data are read once.

    Args:
        model: maps inputs in [0, 1] (normalization inside the model) to logits (N, C).
        data: a re-iterable or one-shot iterable of ``(x, y)`` batches (a DataLoader, a
            list); ``x`` (B, ...) in [0, 1], ``y`` (B,) class indices; moved to the model's
            device.
        attacks: names (``"natural"``, ``"fgsm"``, ``"ifgsm<k>"``, ``"pgd<k>"``, ``"cw"``,
            ``"cw<k>"``: see :func:`tailwise.attacks.parse_attack`), parsed with ``eps``,
            ``alpha``, ``c``, ``kappa`` and ``lr``; or ready :class:`AttackSpec` objects.
        eps: L-infinity radius of FGSM / IFGSM / PGD (002: 8/255).
        alpha: IFGSM / PGD step; default eps / 4 (002: 2/255).
        c, kappa, lr: C&W's margin weight, confidence and Adam learning rate.
        eot_samples: for a stochastic model, attack the mean logits of this many passes
            (:class:`tailwise.attacks.EOT`); the attacked inputs are then classified by one
            pass of ``model``, as a user of the model would. 1: attack ``model`` itself.
        loss_fn: the loss FGSM / IFGSM / PGD increase; default cross-entropy.
        seed: seeds PGD's random starts and, on a forked torch RNG (the global state is
            restored), a stochastic model's noise; None: use the global RNG as it is.
        progress: a progress bar on stderr (only on a terminal).

    Returns:
        A DataFrame with columns ``attack`` (canonical name, e.g. ``"ifgsm20"``), ``eps``
        (the radius; NaN for natural and C&W, which eps does not bound), ``accuracy``
        (``correct / examples``), ``correct``, ``examples``, ``linf`` (the largest
        |x' - x| of any pixel), ``l2`` (mean over examples of ||x' - x||_2), ``seconds``
        (wall time of attacking and classifying), ``status`` (``"ok"``, or ``"failed"`` when
        the attack raised: that attack stops, the others go on) and ``reason`` (the
        failure's first line; empty when ok). A failed row has NaN accuracy, linf and l2,
        and the counts of the batches done before it failed.

    Bad values (an unknown attack name, inputs outside [0, 1], ...) raise
    :class:`tailwise.UsageError`.

    >>> from tailwise.data import digits_loaders
    >>> from tailwise.models import SmallCNN
    >>> _, test = digits_loaders(batch_size=120)
    >>> table = robust_accuracy(SmallCNN(), test, ["natural", "fgsm", "ifgsm5"], eps=0.1)
    >>> table["attack"].tolist(), table["examples"].tolist()
    (['natural', 'fgsm', 'ifgsm5'], [360, 360, 360])
    """
    specs = _parse_attacks(attacks, eps=eps, alpha=alpha, c=c, kappa=kappa, lr=lr)
    eot_samples = check_count("robust_accuracy", "eot_samples", eot_samples)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise UsageError(f"robust_accuracy: seed must be an int or None, got {seed!r}")
    device = model_device(model)
    attacked = model if eot_samples == 1 else EOT(model, eot_samples)
    tallies = [_Tally() for _ in specs]
    total = len(data) * len(specs) if isinstance(data, Sized) else None
    batches = 0
    with (
        torch_work(),
        seeded(seed, device),
        attack_mode(model),
        progress_task("attacks", total, progress) as advance,
    ):
        rng = None if seed is None else make_generator(seed, device)
        for batch in data:
            x, y = _unpack(batch, device)
            batches += 1
            for spec, tally in zip(specs, tallies, strict=True):
                advance(0, description=spec.name)
                if not tally.reason:
                    _run(spec, tally, model, attacked, x, y, rng, loss_fn)
                advance()
    if batches == 0:
        raise UsageError("robust_accuracy: data yielded no batches")
    return pd.DataFrame([t.row(s) for s, t in zip(specs, tallies, strict=True)])


def _run(
    spec: AttackSpec,
    tally: _Tally,
    model: nn.Module,
    attacked: nn.Module,
    x: Tensor,
    y: Tensor,
    rng: torch.Generator | None,
    loss_fn: LossFn | None,
) -> None:
    """Attack one batch with ``spec`` and add the outcome to ``tally`` (or its failure)."""
    start = time.perf_counter()
    try:
        x_adv = spec(attacked, x, y, generator=rng, loss_fn=loss_fn)
        with torch.no_grad():
            hits = model(x_adv).argmax(dim=1) == y
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    except UsageError:
        raise
    except Exception as exc:  # one attack failing must not sink the others (DESIGN.md)
        tally.reason = f"{type(exc).__name__}: {first_line(exc)}"
        return
    tally.add(hits, x_adv - x, time.perf_counter() - start)


def _parse_attacks(
    attacks: Sequence[str | AttackSpec],
    *,
    eps: float,
    alpha: float | None,
    c: float,
    kappa: float,
    lr: float,
) -> list[AttackSpec]:
    if isinstance(attacks, str):
        attacks = [attacks]
    specs = [
        a
        if isinstance(a, AttackSpec)
        else parse_attack(a, eps=eps, alpha=alpha, c=c, kappa=kappa, lr=lr)
        for a in attacks
    ]
    if not specs:
        raise UsageError("robust_accuracy: attacks is empty; name at least one (e.g. natural)")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"robust_accuracy: attacks named twice: {', '.join(repeated)}")
    return specs


def _unpack(batch: Sequence[Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, Sequence) or len(batch) != 2:
        raise UsageError(
            f"robust_accuracy: each batch of data must be a pair (x, y), got a "
            f"{type(batch).__name__}"
        )
    x, y = batch[0].to(device), batch[1].to(device)
    check_batch("robust_accuracy", x, y, class_indices=True)
    return x, y
