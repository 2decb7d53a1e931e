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
