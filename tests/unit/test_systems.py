"""Generated water boxes: geometry, topology and periodic box."""

import numpy as np
import pytest
from openmm import unit

from advmd.committee.neighbors import neighbor_pairs
from advmd.systems import water_box


def test_water_box_geometry_and_density():
    topology, positions, box = water_box(216, seed=3)
    xyz = np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0
    assert topology.getNumAtoms() == 648 and xyz.shape == (648, 3)
    assert [a.element.symbol for a in topology.atoms()][:6] == ["O", "H", "H", "O", "H", "H"]
    assert topology.getNumBonds() == 432
    np.testing.assert_allclose(box, np.eye(3) * (216 * 29.9) ** (1 / 3), rtol=1e-12)
    vectors = np.asarray(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)) * 10.0
    np.testing.assert_allclose(vectors, box, atol=1e-9)
    molecules = xyz.reshape(216, 3, 3)
    oh = np.linalg.norm(molecules[:, 1:] - molecules[:, :1], axis=-1)
    np.testing.assert_allclose(oh, 0.9572, atol=1e-9)
    cos = np.einsum("ni,ni->n", molecules[:, 1] - molecules[:, 0], molecules[:, 2] - molecules[:, 0]) / oh.prod(1)
    np.testing.assert_allclose(np.degrees(np.arccos(cos)), 104.52, atol=1e-9)
    # No two atoms of different molecules closer than 1.2 A, across the periodic boundary too.
    import torch

    i, j, shifts = neighbor_pairs(torch.tensor(xyz), 1.2, torch.tensor(box), half=True)
    assert bool((i // 3 == j // 3).all())
    # Orientations differ between seeds; the lattice does not.
    other = np.asarray(water_box(216, seed=4)[1].value_in_unit(unit.nanometer)) * 10.0
    np.testing.assert_allclose(other.reshape(216, 3, 3).mean(1), molecules.mean(1), atol=1e-9)
    assert np.abs(other - xyz).max() > 0.1


def test_water_box_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_molecules"):
        water_box(0)
