"""Theory simulators (sources 002 ch. 2-3, 003 §3-4; REFERENCES §8).

- :mod:`tailwise.sims.serw`: senile reinforced random walks and their diffusion constants;
- :mod:`tailwise.sims.nonoverlap`: the one-layer non-overlap network under RVSM / RVSCGD;
- :mod:`tailwise.sims.heavy_sgd`: heavy tails from SGD on linear regression, and the
  prunability of synthetic stable layers;
- :class:`SimulationResult`: what every experiment (``tailwise simulate NAME``) returns.
"""

from tailwise.sims._result import SimulationResult

__all__ = ["SimulationResult"]
