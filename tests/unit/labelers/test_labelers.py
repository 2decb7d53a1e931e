"""Labelers: forces are finite differences of their energies; units agree with the backends' own."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from advmd import units
from advmd.labelers import ASECalculatorLabeler, DoubleWell1D, DoubleWell2D, make_labeler
from advmd.systems import alanine_dipeptide


def finite_difference_check(labeler, atoms, coordinates, h=1e-4, atol=1e-4):
    result = labeler.label([atoms])
    assert not result.failures, result.failures
    forces = result.forces[0]
    for a, k in coordinates:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[a, k] += h
        minus.positions[a, k] -= h
        e = labeler.label([plus, minus]).energies
        assert forces[a, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=atol, rel=1e-5), (a, k)
    return result


def alanine_atoms():
    topology, positions = alanine_dipeptide()
    numbers = [a.element.atomic_number for a in topology.atoms()]
    return Atoms(numbers=numbers, positions=np.asarray(positions.value_in_unit(positions.unit)) * 10.0)


def water():
    return Atoms("OH2", positions=[[0.0, 0.0, 0.1], [0.76, 0.0, -0.45], [-0.77, 0.05, -0.47]])


def test_double_well_2d_is_eq15_with_its_gradient():
    labeler = DoubleWell2D()
    for x, y in [(-0.9, 0.3), (0.5, -0.2), (1.2, 1.0)]:
        atoms = Atoms("H", positions=[[x, y, 0.0]])
        result = finite_difference_check(labeler, atoms, [(0, 0), (0, 1)], h=1e-6, atol=1e-6)
        assert result.energies[0] == pytest.approx(10 * x**4 - 10 * x**2 + 2 * x + 4 * y**2)
        assert result.forces[0][0, 2] == 0.0
    # the deeper minimum is the left basin (x < 0), the one the paper's initial data sample
    left = DoubleWell2D().label([Atoms("H", positions=[[-0.7742, 0, 0]])]).energies[0]
    right = DoubleWell2D().label([Atoms("H", positions=[[0.6698, 0, 0]])]).energies[0]
    assert left < -2.0 < right


def test_double_well_1d_gradient():
    finite_difference_check(DoubleWell1D(), Atoms("H", positions=[[0.3, 0.0, 0.0]]), [(0, 0)], h=1e-6, atol=1e-6)


def test_ase_adapter_equals_the_calculator_and_its_gradient():
    atoms = water()
    labeler = ASECalculatorLabeler(lambda: LennardJones(sigma=1.0, epsilon=0.1, rc=5.0), name="lj")
    result = finite_difference_check(labeler, atoms, [(0, 0), (1, 2), (2, 1)], h=1e-5, atol=1e-6)
    direct = atoms.copy()
    direct.calc = LennardJones(sigma=1.0, epsilon=0.1, rc=5.0)
    assert result.energies[0] == pytest.approx(direct.get_potential_energy(), rel=1e-12)


def test_amber14_labels_equal_a_direct_openmm_call():
    import openmm
    from openmm import unit

    from advmd.systems import amber14_vacuum_system

    atoms = alanine_atoms()
    labeler = make_labeler("amber14")
    result = finite_difference_check(labeler, atoms, [(0, 0), (6, 1), (14, 2)], h=1e-4, atol=2e-4)
    topology, positions = alanine_dipeptide()
    context = openmm.Context(
        amber14_vacuum_system(topology), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(positions)
    state = context.getState(energy=True, forces=True)
    kj = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert result.energies[0] * units.EV_TO_KJ_PER_MOL == pytest.approx(kj, rel=1e-6)
    kj_nm = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    np.testing.assert_allclose(result.forces[0] * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, kj_nm, rtol=1e-5, atol=1e-4)


def test_gfn2_xtb_labels_equal_tblite_directly_and_their_gradient():
    from tblite.ase import TBLite

    atoms = alanine_atoms()
    labeler = make_labeler("xtb", accuracy=0.01)
    result = finite_difference_check(labeler, atoms, [(0, 0), (6, 1), (9, 2)], h=1e-4, atol=5e-4)
    direct = atoms.copy()
    direct.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
    # tblite's ASE calculator converts with ASE's CODATA 2014 table: agreement to ~1e-7 relative.
    assert result.energies[0] == pytest.approx(direct.get_potential_energy(), rel=1e-7)
    np.testing.assert_allclose(result.forces[0], direct.get_forces(), rtol=1e-6, atol=1e-6)


def test_pyscf_hartree_fock_gradient_and_units():
    from pyscf import gto, scf

    atoms = water()
    labeler = make_labeler("dft", xc="HF", basis="sto-3g", conv_tol=1e-11)
    result = finite_difference_check(labeler, atoms, [(0, 2), (1, 0), (2, 1)], h=1e-4, atol=2e-5)
    mol = gto.M(
        atom=[(8, atoms.positions[0]), (1, atoms.positions[1]), (1, atoms.positions[2])],
        unit="Angstrom",
        basis="sto-3g",
        verbose=0,
    )
    e_hartree = scf.RHF(mol).kernel()
    assert result.energies[0] == pytest.approx(e_hartree * units.HARTREE_TO_EV, rel=1e-10)


def test_pyscf_bp86_def2svp_ammonia_runs():
    ammonia = Atoms("NH3", positions=[[0, 0, 0.12], [0.94, 0, -0.27], [-0.47, 0.81, -0.27], [-0.47, -0.81, -0.27]])
    result = make_labeler("dft").label([ammonia])
    assert not result.failures
    assert result.energies[0] < -56.0 * units.HARTREE_TO_EV  # NH3 total energy is about -56.5 hartree
    assert np.abs(result.forces[0].sum(0)).max() < 1e-3  # translational invariance: net force ~ 0


def test_periodic_structures_are_labelled_with_their_cell_or_refused():
    """xTB computes a periodic water box with its lattice (not the isolated molecule) with consistent forces; a labeler
    of isolated molecules records a periodic structure as failed instead of ignoring its images."""
    from ase.calculators.emt import EMT

    box = water()
    box.cell, box.pbc = [3.2, 3.3, 3.4], True
    xtb = make_labeler("xtb", accuracy=0.01)
    periodic = finite_difference_check(xtb, box, [(0, 0), (1, 2)], h=1e-4, atol=5e-4)
    isolated = xtb.label([water()])
    assert abs(periodic.energies[0] - isolated.energies[0]) > 0.1  # the images interact (1.7 eV in a 3 A box)
    refused = make_labeler("dft", xc="HF", basis="sto-3g").label([box, water()])
    assert set(refused.failures) == {0} and "periodic" in refused.failures[0]
    # An ASE calculator handles the cell itself; a calculator class is a factory, not an instance.
    cu = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 0.0]], cell=[3.6, 3.6, 3.6], pbc=True)
    by_class = ASECalculatorLabeler(EMT).label([cu])
    direct = cu.copy()
    direct.calc = EMT()
    assert not by_class.failures and by_class.energies[0] == pytest.approx(direct.get_potential_energy(), rel=1e-12)


def test_failures_are_recorded_not_fatal():
    good, bad = water(), water()
    bad.positions[1, 0] = np.nan
    result = make_labeler("dft", xc="HF", basis="sto-3g").label([good, bad, good])
    assert set(result.failures) == {1} and "NaN" in result.failures[1]
    assert result.succeeded == [0, 2] and np.isfinite(result.energies[[0, 2]]).all()
    unconverged = make_labeler("dft", xc="HF", basis="sto-3g", max_cycles=1).label([good])
    assert "did not converge" in unconverged.failures[0]


def test_bad_labeler_input():
    with pytest.raises(ValueError, match="unknown labeler 'orca'"):
        make_labeler("orca")
    with pytest.raises(ValueError, match=r"contains Fm \(Z=100\), which labeler 'gfn2-xtb' does not support"):
        make_labeler("xtb").label([Atoms("Fm", positions=[[0, 0, 0]])])
    with pytest.raises(ValueError, match="structure 0 has 3 atoms but the OpenMM System has 22 particles"):
        make_labeler("amber14").label([water()])
    with pytest.raises(ValueError, match="method must be one of"):
        make_labeler("xtb", method="GFN7")
