"""Theory simulators (sources 002 ch. 2-3, 003 §3-4; REFERENCES §8).

- :mod:`tailwise.sims.serw`: senile reinforced random walks and their diffusion constants;
- :mod:`tailwise.sims.nonoverlap`: the one-layer non-overlap network under RVSM / RVSCGD;
- :mod:`tailwise.sims.heavy_sgd`: heavy tails from SGD on linear regression, and the
  prunability of synthetic stable layers;
- :func:`simulate`: one experiment by its command-line name (``tailwise simulate NAME``),
  with its table and figure written; every experiment returns a :class:`SimulationResult`.
"""

from tailwise.sims._result import SimulationResult
from tailwise.sims.heavy_sgd import (
    SGDTails,
    contraction_moment,
    gaussian_keep_ratio,
    heavy_sgd_experiment,
    linear_regression_sgd,
    lyapunov_exponent,
    prunability_curve,
    stable_prunability_experiment,
    sweep,
    tail_index_theory,
)
from tailwise.sims.nonoverlap import (
    SplittingTrajectory,
    binary_coarse_grad,
    binary_population_grad,
    binary_population_loss,
    limit_checks,
    monte_carlo_check,
    nonoverlap_experiment,
    population_grad,
    population_loss,
    run_rvscgd,
    run_rvsm,
    theorem_conditions,
)
from tailwise.sims.run import (
    FIGURE_FORMATS,
    SIMULATION_NAMES,
    SIMULATIONS,
    parse_options,
    simulate,
    simulation_options,
)
from tailwise.sims.serw import (
    SERW_1D_LIMIT,
    InverseLogFit,
    SeRWResult,
    XiLaw,
    bout_survival,
    diffusion_constant,
    exact_msd,
    serw_diffusion_experiment,
    serw_experiment,
    simulate_serw,
)

__all__ = [
    "FIGURE_FORMATS",
    "SERW_1D_LIMIT",
    "SIMULATIONS",
    "SIMULATION_NAMES",
    "InverseLogFit",
    "SGDTails",
    "SeRWResult",
    "SimulationResult",
    "SplittingTrajectory",
    "XiLaw",
    "binary_coarse_grad",
    "binary_population_grad",
    "binary_population_loss",
    "bout_survival",
    "contraction_moment",
    "diffusion_constant",
    "exact_msd",
    "gaussian_keep_ratio",
    "heavy_sgd_experiment",
    "limit_checks",
    "linear_regression_sgd",
    "lyapunov_exponent",
    "monte_carlo_check",
    "nonoverlap_experiment",
    "parse_options",
    "population_grad",
    "population_loss",
    "prunability_curve",
    "run_rvscgd",
    "run_rvsm",
    "serw_diffusion_experiment",
    "serw_experiment",
    "simulate",
    "simulate_serw",
    "simulation_options",
    "stable_prunability_experiment",
    "sweep",
    "tail_index_theory",
    "theorem_conditions",
]
