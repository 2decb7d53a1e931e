"""Exploration metrics: phi/psi, basin visits (periodic), grid coverage, free-energy error."""

import math

import mdtraj
import numpy as np
import pytest

from advmd.enhanced import basin_of, first_visit_times, free_energy_error, phi_psi, visited_fraction


def test_phi_psi_matches_mdtraj(alanine_pdb):
    positions = alanine_pdb.getPositions(asNumpy=True)._value
    rng = np.random.default_rng(0)
    frames = positions[None] + rng.normal(scale=0.02, size=(4,) + positions.shape)
    trajectory = mdtraj.Trajectory(frames, mdtraj.Topology.from_openmm(alanine_pdb.topology))
    expected = np.stack([mdtraj.compute_phi(trajectory)[1][:, 0], mdtraj.compute_psi(trajectory)[1][:, 0]], axis=1)
    np.testing.assert_allclose(phi_psi(frames * 10.0, alanine_pdb.topology), expected, atol=1e-5)


def test_basins_are_found_across_the_periodic_boundary_and_first_visits_are_timed():
    basins = {"edge": (179.0, -179.0), "centre": (0.0, 0.0)}
    cv = np.radians([[10.0, 170.0], [-178.0, 178.0], [5.0, -5.0], [-170.0, -175.0]])
    assert list(basin_of(cv, basins, radius_deg=20.0)) == ["", "edge", "centre", "edge"]
    visits = first_visit_times(cv, [0.0, 1.5, 2.5, 3.5], basins, radius_deg=20.0)
    assert visits == {"edge": 1.5, "centre": 2.5}
    assert first_visit_times(cv[:1], [0.0], basins, radius_deg=20.0) == {"edge": None, "centre": None}
    with pytest.raises(ValueError, match="one time per frame"):
        first_visit_times(cv, [0.0], basins)


def test_visited_fraction_counts_grid_cells():
    assert visited_fraction(np.array([[0.1, 0.1]]), bins=36) == pytest.approx(1 / 36**2)
    edges = np.linspace(-math.pi, math.pi, 11)
    centres = 0.5 * (edges[1:] + edges[:-1])
    grid = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 2)
    assert visited_fraction(grid, bins=10) == 1.0


def test_free_energy_error_ignores_a_constant_and_counts_missing_bins():
    reference = np.array([[0.0, 5.0], [10.0, 50.0]])
    shifted = reference + 7.0
    assert free_energy_error(shifted, reference, min_bins=1)["rmse_kjmol"] == pytest.approx(0.0, abs=1e-12)
    partial = np.array([[1.0, np.nan], [10.0, 0.0]])
    result = free_energy_error(partial, reference, max_reference_kjmol=20.0, min_bins=2)
    assert result["bins"] == 3 and result["missing_fraction"] == pytest.approx(1 / 3)
    # compared bins 0 and 10 vs 1 and 10 after removing means: errors -0.5, +0.5
    assert result["rmse_kjmol"] == pytest.approx(0.5)
    assert math.isnan(free_energy_error(partial, reference, max_reference_kjmol=20.0)["rmse_kjmol"])  # 2 bins < 5
    with pytest.raises(ValueError, match="differ in shape"):
        free_energy_error(np.zeros(3), np.zeros(4))
