"""Uncertainty-biased enhanced sampling: reweighting to unbiased free energies, and basin/coverage metrics.

The bias schedules themselves are OpenMM reporters in :mod:`advmd.openmm.schedules`.
"""

from advmd.enhanced.reweighting import (
    FreeEnergySurface,
    ReweightingWarning,
    effective_sample_size,
    free_energy_surface,
    reweighting_log_weights,
    weighted_average,
)

__all__ = [
    "FreeEnergySurface",
    "ReweightingWarning",
    "effective_sample_size",
    "free_energy_surface",
    "reweighting_log_weights",
    "weighted_average",
]
from advmd.enhanced.metrics import (  # noqa: E402
    ALANINE_BASINS,
    basin_of,
    first_visit_times,
    free_energy_error,
    phi_psi,
    visited_fraction,
)

__all__ += ["ALANINE_BASINS", "basin_of", "first_visit_times", "free_energy_error", "phi_psi", "visited_fraction"]
