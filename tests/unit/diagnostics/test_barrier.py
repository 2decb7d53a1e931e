import numpy as np
import pytest
from ase import Atoms

from advmd.data.initial import LabelerCalculator
from advmd.diagnostics.barrier import neb_barrier, reflect_through_plane
from advmd.labelers.analytic import DoubleWell2D, double_well_1d


def test_neb_barrier_of_the_double_well_equals_the_saddle_point_energy():
    # Eq. 15 at y = 0: the stationary points are the roots of 40 x^3 - 20 x + 2 = 0.
    roots = np.sort(np.roots([40.0, 0.0, -20.0, 2.0]).real)
    energy, _ = double_well_1d(roots)
    exact = energy[1] - min(energy[0], energy[2])
    start = Atoms("H", positions=[[roots[0] + 0.05, 0.1, 0.0]])  # off the minima: the endpoints get relaxed
    end = Atoms("H", positions=[[roots[2] - 0.05, -0.1, 0.0]])
    result = neb_barrier(lambda: LabelerCalculator(DoubleWell2D()), start, end, n_images=9, fmax=1e-3)
    assert result.converged
    assert result.barrier == pytest.approx(exact, abs=1e-4)
    assert len(result.energies) == 9 and result.positions.shape == (9, 1, 3)
    assert result.energies[0] == pytest.approx(energy[0], abs=1e-5)
    assert result.energies[-1] == pytest.approx(energy[2], abs=1e-5)
    highest = result.positions[int(np.argmax(result.energies)), 0]
    assert highest[0] == pytest.approx(roots[1], abs=2e-3) and abs(highest[1]) < 2e-3


def test_without_climbing_the_band_underestimates_the_saddle():
    roots = np.sort(np.roots([40.0, 0.0, -20.0, 2.0]).real)
    energy, _ = double_well_1d(roots)
    start, end = Atoms("H", positions=[[roots[0], 0, 0]]), Atoms("H", positions=[[roots[2], 0, 0]])
    result = neb_barrier(lambda: LabelerCalculator(DoubleWell2D()), start, end, n_images=4, fmax=1e-3, climb=False)
    assert result.barrier < energy[1] - energy[0] - 1e-3


def test_reflection_through_the_hydrogen_plane_inverts_ammonia():
    ammonia = Atoms("NH3", positions=[[0.1, 0.0, 0.38], [0.94, 0, 0.0], [-0.47, 0.81, 0.05], [-0.47, -0.81, -0.05]])
    inverted = reflect_through_plane(ammonia, (1, 2, 3))
    np.testing.assert_allclose(inverted.positions[1:], ammonia.positions[1:], atol=1e-12)
    np.testing.assert_allclose(inverted.get_all_distances(), ammonia.get_all_distances(), atol=1e-12)
    a, b, c = ammonia.positions[1:]
    normal = np.cross(b - a, c - a)
    assert np.sign((ammonia.positions[0] - a) @ normal) == -np.sign((inverted.positions[0] - a) @ normal)
    np.testing.assert_allclose(reflect_through_plane(inverted, (1, 2, 3)).positions, ammonia.positions, atol=1e-12)


def test_bad_input_is_named():
    ammonia = Atoms("NH3", positions=[[0, 0, 0.4], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    with pytest.raises(ValueError, match="collinear"):
        reflect_through_plane(ammonia, (1, 2, 3))
    with pytest.raises(ValueError, match="three distinct"):
        reflect_through_plane(ammonia, (1, 1, 2))
    with pytest.raises(ValueError, match="n_images"):
        neb_barrier(lambda: LabelerCalculator(DoubleWell2D()), ammonia, ammonia, n_images=2)
    with pytest.raises(ValueError, match="same atoms"):
        neb_barrier(lambda: LabelerCalculator(DoubleWell2D()), ammonia, ammonia[:3], n_images=5)
