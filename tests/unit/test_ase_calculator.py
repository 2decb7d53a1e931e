"""The ASE calculator returns the committee potential's energy and exact forces, in ASE's units."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

from advmd.ase_calculator import CommitteeCalculator
from advmd.systems import water_box
from tests.conftest import small_potential


def test_energy_forces_and_statistics_match_the_potential(alanine):
    positions, numbers = alanine
    potential = small_potential("hal")
    atoms = Atoms(numbers=numbers.numpy(), positions=positions.numpy())
    atoms.calc = CommitteeCalculator(potential, bias_strength=0.2)
    out = potential(positions, numbers, None, torch.tensor(0.2, dtype=torch.float64))
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"]), abs=1e-12)
    assert atoms.calc.results["sigma_f2"] == pytest.approx(float(out["sigma_f2"]), rel=1e-12)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=2e-6)
    assert float(np.abs(forces - out["mean_forces"].numpy()).max()) > 1e-5  # the bias force is in there


def test_periodic_water_box_and_unknown_elements():
    topology, positions, box = water_box(8)
    numbers = np.array([a.element.atomic_number for a in topology.atoms()])
    xyz = np.asarray(positions.value_in_unit(positions.unit)) * 10.0
    potential = small_potential("none", cutoff=2.5)
    atoms = Atoms(numbers=numbers, positions=xyz, cell=box, pbc=True)
    atoms.calc = CommitteeCalculator(potential)
    energy = atoms.get_potential_energy()
    shifted = atoms.copy()
    shifted.positions[5] += box[1]  # a whole box vector: the same periodic structure
    shifted.calc = CommitteeCalculator(potential)
    assert shifted.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    with pytest.raises(ValueError, match=r"elements \[16\]"):
        bad = Atoms("SH2", positions=[[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0]])
        bad.calc = CommitteeCalculator(potential)
        bad.get_potential_energy()


def test_a_cell_not_in_reduced_form_is_rotated_into_it_and_the_forces_back():
    """ASE cells are often not lower-triangular (an fcc primitive cell): the energy equals that of the same crystal
    in reduced form, and the forces are minus the gradient in the caller's axes."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=16.0) * (1, 1, 1)
    atoms.set_atomic_numbers([8])
    atoms += Atoms("HH", positions=[[0.95, 0.1, 0.0], [-0.2, 0.93, 0.1]])
    assert abs(atoms.cell[0, 1]) > 1.0  # not lower-triangular
    potential = small_potential("hal")
    atoms.calc = CommitteeCalculator(potential, bias_strength=0.2)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    reduced = atoms.copy()
    reduced_cell, rotation = atoms.cell.standard_form()
    reduced.set_cell(reduced_cell, scale_atoms=False)
    reduced.positions = atoms.positions @ rotation.T
    reduced.calc = CommitteeCalculator(potential, bias_strength=0.2)
    assert reduced.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=2e-6)
    np.testing.assert_allclose(forces @ rotation.T, reduced.get_forces(), atol=1e-10)


def test_a_float64_committee_without_parameters_keeps_float64_positions():
    from advmd.committee import CommitteePotential
    from advmd.committee.members import TorchScriptCommittee
    from tests.integration.test_openmm_force import _BufferSpring

    potential = CommitteePotential(TorchScriptCommittee([torch.jit.script(_BufferSpring(k)) for k in (1.0, 1.1)], [1], 5.0))
    atoms = Atoms("H2", positions=[[0.0, 0.0, 0.0], [1.234567891234, 0.0, 0.0]])
    atoms.calc = CommitteeCalculator(potential)
    assert atoms.calc.dtype == torch.float64
    assert atoms.get_potential_energy() == pytest.approx(1.05 * 2 * 1.234567891234**2, rel=1e-14)


def test_changing_the_bias_strength_recomputes(alanine):
    """ASE keeps results until the atoms change; a new strength must not return the old strength's energy."""
    potential = small_potential("udd", width=1.0)
    positions, numbers = alanine
    atoms = Atoms(numbers=numbers.numpy(), positions=positions.numpy())
    atoms.calc = CommitteeCalculator(potential, bias_strength=0.0)
    unbiased = atoms.get_potential_energy()
    atoms.calc.bias_strength = 0.5
    biased = atoms.get_potential_energy()
    fresh = CommitteeCalculator(potential, bias_strength=0.5)
    assert biased == pytest.approx(fresh.get_potential_energy(atoms.copy()), rel=1e-12)
    assert biased != unbiased
    assert atoms.calc.results["bias_energy"] != 0.0
