"""Initial data of the paper's systems: the physics they must satisfy."""

import numpy as np
import pytest

from advmd import units
from advmd.data.initial import (
    alanine_md_structures,
    ammonia_ground_state,
    double_well_structures,
    normal_mode_displacements,
    numerical_hessian,
)
from advmd.labelers import DoubleWell2D, make_labeler


def test_double_well_initial_data_is_one_basin_below_the_cut():
    structures = double_well_structures(800, seed=3)
    xy = np.array([s.positions[0, :2] for s in structures])
    energies = DoubleWell2D().label(structures).energies
    assert len(structures) > 20 and np.all(energies < -2.0)
    assert np.all(xy[:, 0] < 0)  # only the deeper, left basin lies below E = -2
    again = double_well_structures(800, seed=3)
    np.testing.assert_array_equal(xy, np.array([s.positions[0, :2] for s in again]))


def test_ammonia_relaxation_hessian_and_thermal_displacements():
    labeler = make_labeler("xtb", accuracy=0.01)
    ground = ammonia_ground_state(labeler, fmax=1e-3)
    ground_result = labeler.label([ground])
    assert np.abs(ground_result.forces[0]).max() < 1e-3
    hessian = numerical_hessian(ground, labeler)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-12)
    masses = np.repeat(ground.get_masses(), 3)
    eigenvalues = np.sort(np.abs(np.linalg.eigvalsh(hessian / np.sqrt(np.outer(masses, masses)))))
    assert eigenvalues[5] < 0.05 * eigenvalues[6]  # six external modes, well separated from the vibrations

    structures = normal_mode_displacements(ground, hessian, 78, (250.0, 750.0), seed=1)
    energies = labeler.label(structures).energies - ground_result.energies[0]
    # Equipartition for 6 harmonic modes: <E - E0> = 6 * kT / 2 with <T> = 500 K.
    expected = 6 * 0.5 * units.BOLTZMANN_EV_PER_K * 500.0
    assert energies.mean() == pytest.approx(expected, rel=0.3)
    assert np.all(energies > 0)
    # Seeded structures do not depend on the arbitrary sign LAPACK gives each normal mode: a Hessian
    # perturbed at 1e-12 (two relaxations of the same molecule differ that much) gives the same ones.
    noise = np.random.default_rng(0).normal(size=hessian.shape) * 1e-12
    again = normal_mode_displacements(ground, hessian + 0.5 * (noise + noise.T), 78, (250.0, 750.0), seed=1)
    np.testing.assert_allclose([a.positions for a in again], [a.positions for a in structures], atol=1e-8)


def test_ammonia_initial_data_uses_the_labelers_settings():
    """The ground state and normal modes come from the method the labels use, with its options (GFN1 here)."""
    from advmd.data.initial import initial_structures

    structures, settings = initial_structures("ammonia", 2, seed=0, labeler="xtb", labeler_options={"method": "GFN1-xTB"})
    assert settings["labeler"] == "gfn1-xtb" and settings["labeler_settings"]["method"] == "GFN1-xTB"
    gfn1 = make_labeler("xtb", method="GFN1-xTB")
    gfn2 = make_labeler("xtb")
    ground1, ground2 = ammonia_ground_state(gfn1), ammonia_ground_state(gfn2)
    bond = lambda atoms: float(np.linalg.norm(atoms.positions[1] - atoms.positions[0]))  # noqa: E731
    assert abs(bond(ground1) - bond(ground2)) > 1e-3  # the two methods disagree on the N-H length


def test_alanine_md_structures_are_seeded_and_constrained():
    a = alanine_md_structures(n_frames=3, interval_ps=0.1, seed=5)
    b = alanine_md_structures(n_frames=3, interval_ps=0.1, seed=5)
    assert len(a) == 3 and len(a[0]) == 22
    np.testing.assert_array_equal(a[2].positions, b[2].positions)
    # HBonds constraints: the C-H bond of the first methyl (atoms 1-0) keeps its amber14 length (1.09 A).
    lengths = [np.linalg.norm(s.positions[0] - s.positions[1]) for s in a]
    np.testing.assert_allclose(lengths, 1.09, atol=1e-3)
