"""Energy conservation: a short NVE run of alanine dipeptide with a fixed committee (and its bias).

Measured when written (Reference platform, float64, Verlet 0.5 fs, 2000 steps, 300 K start):
max |E(t) - E(0)| = 0.014 (mean), 0.021 (UDD active), 0.017 (HAL active) kJ/mol with a
kinetic energy near 200 kJ/mol. The bound below, 0.1 kJ/mol over 1 ps, leaves a 5x margin; a
non-conservative bias force (e.g. a missing second-derivative term) drifts by far more.
"""

import numpy as np
import openmm
import pytest
from openmm import unit

from advmd.openmm import create_system, read_uncertainty
from tests.conftest import small_potential

DRIFT_BOUND_KJ_PER_MOL = 0.1


@pytest.mark.parametrize(
    "form,params,strength",
    [("none", {}, 0.0), ("udd", {"width": 1.0}, 50.0), ("hal", {}, 0.05)],
    ids=["mean", "udd", "hal"],
)
def test_nve_total_energy_drift_is_bounded(alanine_pdb, form, params, strength):
    system = create_system(alanine_pdb.topology, small_potential(form, **params), bias_strength=strength, remove_cm_motion=False)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(alanine_pdb.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    totals = []
    for _ in range(100):
        integrator.step(20)
        state = context.getState(energy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    totals = np.array(totals)
    assert kinetic > 50.0, "the molecule must actually move"
    assert np.abs(totals - totals[0]).max() < DRIFT_BOUND_KJ_PER_MOL
    if form != "none":
        assert abs(read_uncertainty(context).bias_energy) > 1.0  # kJ/mol: the bias takes part
