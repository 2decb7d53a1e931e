"""Attacks raise the committee's uncertainty, respect kT, and batched equals one-at-a-time."""

import numpy as np
import pytest
import torch

from advmd.attacks import DihedralRotation, peptide_dihedrals
from advmd.attacks.attack import AttackConfig, attack, batch_statistics, log_partition_function
from advmd.committee import SchNetCommittee
from advmd.train import StructureSet, TrainingConfig, train_committee
from tests.unit.train.test_trainer import harmonic_triatomic, sample

NUMBERS = [8, 1, 1]


@pytest.fixture(scope="module")
def trained():
    """A committee trained on one 'basin': small distortions of a triatomic (analytic labels)."""
    torch.manual_seed(0)
    positions = sample(80, 0.06, seed=1)
    energies, forces = harmonic_triatomic(positions)
    committee = SchNetCommittee([1, 8], n_members=4, n_features=16, n_rbf=12, n_interactions=2, cutoff=3.0, seed=3).double()
    train_committee(
        committee,
        StructureSet.from_arrays(NUMBERS, positions, energies, forces),
        TrainingConfig(epochs=40, batch_size=16, learning_rate=5e-3, seed=0),
    )
    return committee, positions, energies


def test_attack_raises_sigma_f2(trained):
    committee, positions, _ = trained
    result = attack(committee, NUMBERS, positions[:6], "cartesian", AttackConfig(steps=60, learning_rate=0.01, seed=1))
    assert np.all(result.sigma_f2 > result.initial_sigma_f2)
    assert np.median(result.sigma_f2 / result.initial_sigma_f2) > 2.0


def test_lower_kt_gives_lower_energy_attacks(trained):
    committee, positions, energies = trained
    seeds = positions[:8]
    results = {}
    for kt in (0.02, 2.0):
        config = AttackConfig(steps=80, learning_rate=0.01, kt=kt, log_partition=log_partition_function(energies, kt), seed=2)
        results[kt] = attack(committee, NUMBERS, seeds, "cartesian", config)
    assert np.mean(results[0.02].mean_energy) < np.mean(results[2.0].mean_energy)


def test_batched_attack_equals_one_at_a_time(trained):
    committee, positions, _ = trained
    seeds = positions[:3]
    config = AttackConfig(steps=25, learning_rate=0.01, init_std=0.0, seed=4)
    for parameter in committee.parameters():
        parameter.grad = None
    batched = attack(committee, NUMBERS, seeds, "cartesian", config)
    for k in range(3):
        single = attack(committee, NUMBERS, seeds[k : k + 1], "cartesian", config)
        np.testing.assert_allclose(single.positions[0], batched.positions[k], atol=1e-8)
    # The attack differentiates with respect to its displacements only: the committee is left untouched.
    assert all(parameter.grad is None for parameter in committee.parameters())


def test_attack_with_tabulated_filters_follows_the_exact_committee(trained):
    """The tables carry second derivatives: the sigma_F^2 gradient, hence the attack path, is the exact one."""
    committee, positions, _ = trained
    tabulated = committee.tabulated()
    # The attack's gradient, d sigma_F^2 / dR at the seeds, is the exact committee's to table precision.
    gradients = []
    for model in (committee, tabulated):
        x = torch.tensor(positions[:3]).requires_grad_(True)
        _, sigma_f2 = batch_statistics(model, torch.tensor(NUMBERS), x)
        gradients.append(torch.autograd.grad(sigma_f2.sum(), x)[0])
    scale = float(gradients[0].abs().max())
    assert float((gradients[1] - gradients[0]).abs().max()) < 1e-5 * scale  # 3e-6 seen: second derivatives, as h^4
    config = AttackConfig(steps=25, learning_rate=0.01, init_std=0.0, seed=4)
    exact = attack(committee, NUMBERS, positions[:3], "cartesian", config)
    fast = attack(tabulated, NUMBERS, positions[:3], "cartesian", config)
    assert np.max(np.abs(exact.positions - positions[:3])) > 0.05  # the attack moved the atoms
    # Adam divides by the root mean square of past gradients, which magnifies table-level (1e-9) gradient
    # differences in components near zero (a step of up to lr = 0.01 A in either direction): the paths agree to
    # about 1e-5 A (2.3e-5 seen), not to rounding.
    np.testing.assert_allclose(fast.positions, exact.positions, atol=1e-4)
    np.testing.assert_allclose(fast.sigma_f2, exact.sigma_f2, rtol=1e-4)


def test_dihedral_attack_on_alanine_keeps_bonds_and_raises_uncertainty():
    from advmd.committee import load_trainable_committee
    from advmd.systems import alanine_dipeptide, resource_path

    topology, positions = alanine_dipeptide()
    numbers = [a.element.atomic_number for a in topology.atoms()]
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    committee, _ = load_trainable_committee(resource_path("alanine-dipeptide-committee.pt"))
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology))
    seeds = np.repeat(np.asarray(positions._value)[None] * 10.0, 3, axis=0)
    result = attack(committee, numbers, seeds, rotation, AttackConfig(steps=30, learning_rate=0.05, init_std=0.3, seed=0))
    assert np.all(result.sigma_f2 > result.initial_sigma_f2)
    index = np.array(bonds)
    before = np.linalg.norm(seeds[0][index[:, 1]] - seeds[0][index[:, 0]], axis=1)
    for frame in result.positions:
        np.testing.assert_allclose(np.linalg.norm(frame[index[:, 1]] - frame[index[:, 0]], axis=1), before, atol=1e-4)
    with pytest.raises(ValueError, match="max_norm bounds Cartesian displacements"):  # angles have no such bound
        attack(committee, numbers, seeds, rotation, AttackConfig(steps=1, max_norm=0.3))


def test_bad_attack_input(trained):
    committee, positions, energies = trained
    with pytest.raises(ValueError, match="kt must be a temperature > 0 eV"):
        attack(committee, NUMBERS, positions[:1], "cartesian", AttackConfig(kt=0.0))
    bad = positions[:2].copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="seeds contain NaN"):
        attack(committee, NUMBERS, bad, "cartesian", AttackConfig(steps=1))
    with pytest.raises(ValueError, match="variables must be 'cartesian' or a DihedralRotation"):
        attack(committee, NUMBERS, positions[:1], "polar", AttackConfig(steps=1))
    with pytest.raises(ValueError, match="kt must be > 0 eV"):
        log_partition_function(energies, -1.0)
    from advmd.attacks.job import ExplorationConfig

    with pytest.raises(ValueError, match="max_norm \\(0.3\\) bounds Cartesian displacements"):
        ExplorationConfig(space="dihedral", dihedrals=["phi"], attack=AttackConfig(max_norm=0.3)).validate()


def test_initial_uncertainty_is_measured_at_the_seeds(trained):
    """Before the attack means at the seeds (as for the random baseline), not after the initial noise."""
    from advmd.attacks import committee_statistics

    committee, positions, _ = trained
    result = attack(committee, NUMBERS, positions[:4], "cartesian", AttackConfig(steps=2, init_std=0.2, seed=3))
    _, at_seeds = committee_statistics(committee, NUMBERS, positions[:4])
    np.testing.assert_allclose(result.initial_sigma_f2, at_seeds, rtol=1e-10)


def test_partition_function_comes_from_the_training_energies_and_only_shifts_the_objective(tmp_path, monkeypatch):
    """Q of Eq. 11-12 from the training rows: the attack gets their log Q, its geometries are those of any Q, and its
    objective moves by log Q(all rows) - log Q(training rows) at every step."""
    import advmd.attacks.job as job_module
    from advmd.attacks import AttackConfig, log_partition_function
    from advmd.attacks.job import ExplorationConfig, generate_candidates, seed_pool, training_energies
    from advmd.committee import load_trainable_committee
    from advmd.data import Dataset
    from advmd.systems import resource_path
    from tests.conftest import labelled_alanine_db

    dataset = Dataset(labelled_alanine_db(tmp_path / "ala.db", n_frames=5, seed=2))
    ids, numbers, pool, energies = seed_pool(dataset)
    training = ids[:3]
    partition = training_energies(ids, energies, training)
    np.testing.assert_array_equal(partition, energies[:3])
    assert training_energies(ids, energies, [10_000]) is None and training_energies(ids, energies, None) is None
    committee, _ = load_trainable_committee(resource_path("alanine-dipeptide-committee.pt"))
    config = ExplorationConfig(
        n_seeds=2, attack=AttackConfig(steps=3, learning_rate=1e-2, init_std=0.01, kt=0.05, seed=1), energy_cap=None, seed=1
    )
    runs, seen = {}, {}
    original = job_module.attack

    def spy(*args):
        result = original(*args)
        seen[args[-1].log_partition] = result.objective_history
        return result

    monkeypatch.setattr(job_module, "attack", spy)
    for name, energies_q in (("all", None), ("training", partition)):
        runs[name] = generate_candidates(committee, numbers, pool, ids, energies, config, None, energies_q)
    np.testing.assert_array_equal(runs["all"].positions, runs["training"].positions)
    q_all, q_training = log_partition_function(energies, 0.05), log_partition_function(partition, 0.05)
    assert set(seen) == {q_all, q_training} and abs(q_all - q_training) > 1e-3
    np.testing.assert_allclose(np.subtract(seen[q_training], seen[q_all]), q_all - q_training, rtol=1e-5)


def test_a_seed_that_turns_non_finite_is_frozen_and_dropped_not_fatal(trained, caplog):
    """Two coinciding atoms give a 0/0 gradient. Above 1024 atoms in a batch (cell-list pair search) one NaN seed used to
    crash the whole attack; now it is frozen and reported with sigma_F^2 = NaN, and every other seed ends exactly where
    it ends without it."""
    committee, positions, _ = trained
    seeds = np.concatenate([positions] * 5)[:345].copy()  # 1035 atoms
    seeds[0, 1] = seeds[0, 0]
    config = AttackConfig(steps=3, learning_rate=0.01, init_std=0.0, seed=0)
    with caplog.at_level("WARNING", logger="advmd.attacks.attack"):
        result = attack(committee, NUMBERS, seeds, "cartesian", config)
    assert np.isnan(result.sigma_f2[0]) and np.all(np.isfinite(result.sigma_f2[1:]))
    assert "1 of 345 attack seeds" in caplog.text
    assert np.all(np.isfinite(result.objective_history))
    alone = attack(committee, NUMBERS, seeds[1:], "cartesian", config)
    np.testing.assert_allclose(result.positions[1:], alone.positions, atol=1e-12)
    np.testing.assert_allclose(result.sigma_f2[1:], alone.sigma_f2, rtol=1e-10)


def test_exploration_summaries_skip_frozen_seeds():
    """A seed reported with NaN (frozen) must not turn the medians of 'advmd attack' into NaN (invalid JSON)."""
    from advmd.attacks.job import _finite_stat

    values = np.array([0.2, np.nan, 0.4, 0.3])
    assert _finite_stat(np.median, values) == pytest.approx(0.3) and _finite_stat(np.max, values) == pytest.approx(0.4)
    assert _finite_stat(np.median, np.array([np.nan])) is None
