"""Dihedral rotations: set the angle, keep bonds and fixed-side angles, periodic, exact gradients."""

import math

import mdtraj
import numpy as np
import pytest
import torch

from advmd.attacks import DihedralRotation, dihedral_angles, peptide_dihedrals
from advmd.systems import alanine_dipeptide


@pytest.fixture(scope="module")
def alanine():
    topology, positions = alanine_dipeptide()
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    xyz = torch.tensor(np.asarray(positions._value) * 10.0, dtype=torch.float64)
    return topology, bonds, xyz


def test_rotation_sets_phi_psi_as_mdtraj_measures_them(alanine):
    topology, bonds, xyz = alanine
    dihedrals = peptide_dihedrals(topology)
    rotation = DihedralRotation(22, bonds, dihedrals)
    targets = torch.tensor([[-1.2, 2.5], [0.9, -0.6], [math.pi - 0.01, -math.pi + 0.02]], dtype=torch.float64)
    current = dihedral_angles(xyz, rotation.quadruples)
    moved = rotation.apply(xyz.expand(3, 22, 3).clone(), targets - current)
    trajectory = mdtraj.Trajectory(moved.numpy() / 10.0, mdtraj.Topology.from_openmm(topology))
    phi = mdtraj.compute_dihedrals(trajectory, [dihedrals[0]])[:, 0]
    psi = mdtraj.compute_dihedrals(trajectory, [dihedrals[1]])[:, 0]
    wrapped = lambda x: (x + math.pi) % (2 * math.pi) - math.pi  # noqa: E731
    np.testing.assert_allclose(wrapped(phi - targets[:, 0].numpy()), 0, atol=1e-6)
    np.testing.assert_allclose(wrapped(psi - targets[:, 1].numpy()), 0, atol=1e-6)
    # all bond lengths kept
    bond_index = np.array(bonds)
    before = np.linalg.norm(xyz.numpy()[bond_index[:, 1]] - xyz.numpy()[bond_index[:, 0]], axis=1)
    for frame in moved.numpy():
        np.testing.assert_allclose(np.linalg.norm(frame[bond_index[:, 1]] - frame[bond_index[:, 0]], axis=1), before, atol=1e-9)


def test_non_moving_atoms_keep_their_geometry_and_rotation_is_periodic(alanine):
    topology, bonds, xyz = alanine
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology, ["phi"]))
    moved = rotation.apply(xyz.unsqueeze(0), torch.tensor([[0.7]], dtype=torch.float64))[0]
    fixed = np.flatnonzero(rotation.masks[0].numpy() == 0)
    # distances among the fixed atoms are unchanged (their angles too)
    d0 = torch.cdist(xyz[fixed], xyz[fixed])
    d1 = torch.cdist(moved[fixed], moved[fixed])
    torch.testing.assert_close(d1, d0, atol=1e-10, rtol=0)
    full_turn = rotation.apply(xyz.unsqueeze(0), torch.tensor([[0.7 + 2 * math.pi]], dtype=torch.float64))[0]
    torch.testing.assert_close(full_turn, moved, atol=1e-9, rtol=0)


def test_gradient_matches_finite_differences(alanine):
    topology, bonds, xyz = alanine
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology))
    weights = torch.randn(22, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    delta = torch.tensor([[0.3, -0.4]], dtype=torch.float64, requires_grad=True)
    value = (rotation.apply(xyz.unsqueeze(0), delta)[0] * weights).sum()
    (gradient,) = torch.autograd.grad(value, delta)
    h = 1e-6
    for k in range(2):
        step = torch.zeros_like(delta)
        step[0, k] = h
        plus = (rotation.apply(xyz.unsqueeze(0), delta.detach() + step)[0] * weights).sum()
        minus = (rotation.apply(xyz.unsqueeze(0), delta.detach() - step)[0] * weights).sum()
        assert float(gradient[0, k]) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-6, abs=1e-8)


def test_dihedral_angles_equal_mdtraj(alanine):
    topology, bonds, xyz = alanine
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology))
    moved = rotation.apply(
        xyz.expand(4, 22, 3).clone(), torch.tensor([[0.5, 1.0], [-2.0, 0.3], [1.5, -1.5], [3.0, 2.0]], dtype=torch.float64)
    )
    trajectory = mdtraj.Trajectory(moved.numpy() / 10.0, mdtraj.Topology.from_openmm(topology))
    expected = mdtraj.compute_dihedrals(trajectory, rotation.quadruples.numpy())
    np.testing.assert_allclose(dihedral_angles(moved, rotation.quadruples).numpy(), expected, atol=2e-6)


def test_bad_dihedrals_are_named():
    ring = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (2, 6)]
    with pytest.raises(ValueError, match="bond 2-3 lies in a ring"):
        DihedralRotation(7, ring, [(1, 2, 3, 4)])
    with pytest.raises(ValueError, match="atoms 0 and 2 are not bonded"):
        DihedralRotation(7, ring, [(0, 2, 3, 4)])
    with pytest.raises(ValueError, match="four distinct atoms"):
        DihedralRotation(7, ring, [(1, 2, 2, 4)])
