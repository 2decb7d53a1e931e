"""bias_only: the committee's uncertainty bias on top of another potential (here amber14), without the committee mean."""

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from advmd import units
from advmd.openmm import add_committee_force, read_uncertainty
from advmd.systems import amber14_vacuum_system
from tests.conftest import small_potential


def state_of(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(energy=True, getForces=True)
    return (
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
        context,
    )


@pytest.mark.parametrize("backend", ["torch", "python"])
@pytest.mark.parametrize("form,params,strength_ev", [("udd", {"width": 1.0}, 0.3), ("hal", {}, 0.2)])
def test_bias_only_adds_exactly_the_bias_to_the_force_field(alanine_pdb, alanine, backend, form, params, strength_ev):
    potential = small_potential(form, **params)
    openmm_strength = strength_ev * (units.EV_TO_KJ_PER_MOL if form == "udd" else units.ANGSTROM_TO_NM)
    plain = amber14_vacuum_system(alanine_pdb.topology)
    biased = amber14_vacuum_system(alanine_pdb.topology)
    add_committee_force(alanine_pdb.topology, biased, potential, bias_strength=openmm_strength, bias_only=True, backend=backend)
    e0, f0, _ = state_of(plain, alanine_pdb.positions)
    e1, f1, context = state_of(biased, alanine_pdb.positions)
    positions, numbers = alanine
    out = potential(positions, numbers, None, torch.tensor(strength_ev, dtype=torch.float64))
    assert e1 - e0 == pytest.approx(float(out["bias_energy"]) * units.EV_TO_KJ_PER_MOL, rel=1e-9, abs=1e-9)
    bias_forces = (out["forces"] - out["mean_forces"]).numpy() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
    np.testing.assert_allclose(f1 - f0, bias_forces, atol=1e-8)
    assert np.abs(bias_forces).max() > 1e-3  # the bias does act
    assert read_uncertainty(context).sigma_force == pytest.approx(
        float(out["sigma_f2"].sqrt()) * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rel=1e-9
    )


def test_bias_only_on_a_force_field_conserves_energy(alanine_pdb):
    system = amber14_vacuum_system(alanine_pdb.topology)
    add_committee_force(alanine_pdb.topology, system, small_potential("udd", width=1.0), bias_strength=30.0, bias_only=True)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(alanine_pdb.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    integrator.step(10)
    totals = []
    for _ in range(50):
        integrator.step(20)
        state = context.getState(energy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    assert np.ptp(totals) < 0.5  # kJ/mol over 0.5 ps; amber14 alone: about 0.1
    assert abs(read_uncertainty(context).bias_energy) > 1.0
