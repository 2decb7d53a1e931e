"""Coordinate-MLP committee: learns the 2D double well, exact forces, export round trip, batching."""

import numpy as np
import pytest
import torch

from advmd.committee import CommitteePotential, CoordinateMLPCommittee, export_committee, load_trainable_committee, make_bias
from advmd.labelers.analytic import double_well_2d
from advmd.train import StructureSet, TrainingConfig, evaluate, train_committee


def well_data(n, seed):
    xy = np.random.default_rng(seed).uniform(-1.3, 1.3, size=(n, 2))
    energy, gradient = double_well_2d(xy)
    positions = np.concatenate([xy, np.zeros((n, 1))], axis=1)[:, None, :]
    forces = np.concatenate([-gradient, np.zeros((n, 1))], axis=1)[:, None, :]
    return StructureSet.from_arrays([1], positions, energy, forces)


def test_mlp_learns_double_well_and_round_trips(tmp_path):
    committee = CoordinateMLPCommittee(1, [1], n_members=3, hidden=(32, 32), dimensions=2, seed=0).double()
    train, test = well_data(300, 0), well_data(100, 1)
    before = evaluate(committee, test)["mean_force_rmse"]
    train_committee(committee, train, TrainingConfig(epochs=60, batch_size=32, learning_rate=5e-3, seed=0))
    after = evaluate(committee, test)
    assert after["mean_force_rmse"] < 0.2 * before
    # energies span ~25 eV over the box; a fit within 0.5 eV shows the shape is learnt
    assert after["mean_energy_rmse"] < 0.5
    path = tmp_path / "mlp.pt"
    export_committee(CommitteePotential(committee, make_bias("none", 3)), path)
    loaded, metadata = load_trainable_committee(path)
    assert metadata["architecture"]["class"] == "CoordinateMLPCommittee"
    assert metadata["architecture"]["hyperparameters"]["dimensions"] == 2
    x = torch.tensor([[[0.3, -0.2, 0.7]]], dtype=torch.float64).expand(3, 1, 3)
    z = torch.tensor([1])
    torch.testing.assert_close(loaded(x, z, None), committee(x, z, None))


def test_mlp_forces_are_exact_gradients_and_batching_is_exact():
    committee = CoordinateMLPCommittee(3, [1, 8], n_members=2, hidden=(8,), seed=1).double()
    z = torch.tensor([8, 1, 1])
    x = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    energy = committee(x, z, None)
    (gradient,) = torch.autograd.grad(energy.sum(), x)
    h = 1e-6
    for atom, axis in ((0, 0), (2, 1)):
        shift = torch.zeros_like(x)
        shift[:, atom, axis] = h
        numeric = (committee(x + shift, z, None) - committee(x - shift, z, None)) / (2 * h)
        torch.testing.assert_close(gradient[:, atom, axis], numeric, atol=1e-7, rtol=1e-6)
    pair = torch.cat([x, 0.5 * x], dim=1)  # two structures concatenated along atoms
    atomic = committee.atomic_energies(pair, z.repeat(2), None, None)
    torch.testing.assert_close(atomic[:, :3].sum(1), energy)
    torch.testing.assert_close(atomic[:, 3:].sum(1), committee(0.5 * x, z, None))


def test_mlp_bad_input():
    with pytest.raises(ValueError, match="dimensions must be 1, 2 or 3"):
        CoordinateMLPCommittee(1, [1], dimensions=4)
    committee = CoordinateMLPCommittee(2, [1], n_members=2)
    with pytest.raises(ValueError, match="structures of 2 atoms"):
        committee.atomic_energies(torch.zeros(2, 3, 3), torch.tensor([1, 1, 1]), None, None)
