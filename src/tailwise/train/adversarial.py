"""Adversarial training (source 002 §4.2.2-4.2.3) through the one loop :func:`tailwise.train.fit`.

002 trains on PGD adversarial examples regenerated at every step with the current weights
(10 IFGSM steps of alpha = 2/255 from a uniform random start in the eps = 8/255 ball;
REFERENCES §7): min_w E max_{||x' - x||_inf <= eps} L(w; x', y). Here the inner maximization
is a data transformation: :func:`adversarial_batches` wraps a loader and yields ``(x_adv, y)``
batches, so adversarial training is ``fit(model, adversarial_batches(loader, model,
"pgd10"), ...)`` and composes with any optimizer, callback or loss term ``fit`` takes
(002 §4.2: RVSM / RGSM / ADMM then act in the back-propagation stage, on adversarial batches).

Each batch is attacked in eval mode (BatchNorm on its running statistics, no dropout) with
the parameters frozen; afterwards every module's mode and every parameter's
``requires_grad`` are restored, so ``fit`` goes on training in train mode and the attack
leaves no parameter gradient behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence, Sized

import torch
from torch import Tensor, nn

from tailwise._errors import UsageError
from tailwise._modules import model_device
from tailwise._seeds import Seed
from tailwise._seeds import generator as make_generator
from tailwise.attacks import AttackSpec, parse_attack

__all__ = ["AdversarialBatches", "adversarial_batches", "parse_attack"]


class AdversarialBatches:
    """Batches ``(x_adv, y)`` of a loader, attacked with a model's current weights.

    Re-iterable (one pass of the loader per iteration, e.g. one per epoch of ``fit``) and
    sized when the loader is. Batches are moved to the model's device; ``x_adv`` is
    detached. Build it with :func:`adversarial_batches`.
    """

    def __init__(
        self,
        loader: Iterable[Sequence[Tensor]],
        model: nn.Module,
        attack: AttackSpec,
        seed: Seed | None,
    ) -> None:
        self.loader = loader
        self.model = model
        self.attack = attack
        self._seed = seed
        self._generator: torch.Generator | None = None

    def __len__(self) -> int:
        if not isinstance(self.loader, Sized):
            raise TypeError("adversarial_batches: the wrapped loader has no length")
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = model_device(self.model)
        if self._seed is not None and self._generator is None:
            # One stream for the whole run: each epoch gets new random starts, and a fresh
            # wrapper with the same seed repeats the run.
            self._generator = make_generator(self._seed, device)
        for batch in self.loader:
            if not isinstance(batch, Sequence) or len(batch) != 2:
                raise UsageError(
                    "adversarial_batches: each batch must be a pair (x, y), got a "
                    f"{type(batch).__name__}"
                )
            x, y = batch[0].to(device), batch[1].to(device)
            yield self.attack(self.model, x, y, generator=self._generator), y


def adversarial_batches(
    loader: Iterable[Sequence[Tensor]],
    model: nn.Module,
    attack: str | AttackSpec = "pgd10",
    *,
    seed: Seed | None = None,
) -> AdversarialBatches:
    """Wrap ``loader`` so that each batch is replaced by its adversarial version.

    Args:
        loader: ``(x, y)`` batches, ``x`` in [0, 1] (normalization inside the model),
            ``y`` class indices.
        model: the model being trained (the same object given to ``fit``); each batch is
            attacked with its weights at that moment.
        attack: an attack name parsed by :func:`parse_attack` with 002's training values
            (eps 8/255, alpha 2/255: ``"pgd10"`` is 002's PGD-10 with random start), or an
            :class:`tailwise.attacks.AttackSpec` for other values (``parse_attack("pgd7",
            eps=0.2)``).
        seed: seeds the random starts (int or ``torch.Generator`` on the model's device);
            None: torch's global RNG, which ``fit(seed=...)`` seeds.

    >>> from tailwise.data import digits_loaders
    >>> from tailwise.models import SmallCNN
    >>> from tailwise.train import fit
    >>> train, _ = digits_loaders(batch_size=128)
    >>> model = SmallCNN()
    >>> batches = adversarial_batches(train, model, parse_attack("pgd3", eps=0.1), seed=0)
    >>> fit(model, batches, epochs=1, progress=False).epochs, model.training
    (1, True)
    """
    if isinstance(attack, str):
        attack = parse_attack(attack)
    if not isinstance(attack, AttackSpec):
        raise UsageError(
            "adversarial_batches: attack must be a name such as 'pgd10' or an AttackSpec, "
            f"got {type(attack).__name__}"
        )
    return AdversarialBatches(loader, model, attack, seed)
