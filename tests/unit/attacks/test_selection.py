"""Selection: Kabsch RMSD, deduplication of rigid copies, threshold / energy cap / budget, random baseline."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from advmd.attacks import (
    DihedralRotation,
    SelectionConfig,
    dihedral_angles,
    pairwise_rmsd,
    peptide_dihedrals,
    random_displacements,
    rmsd_to_set,
    select,
)
from advmd.systems import alanine_dipeptide


def kabsch_rmsd(a, b):
    """Independent reference: SVD superposition with the reflection correction."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ rotation - b) ** 2).sum(1).mean()))


@pytest.fixture(scope="module")
def alanine_conformers():
    """Alanine dipeptide with phi rotated by 0, 100 and 200 degrees (Angstrom), numbers, topology."""
    topology, positions = alanine_dipeptide()
    numbers = [a.element.atomic_number for a in topology.atoms()]
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology, ["phi"]))
    base = torch.tensor(np.asarray(positions._value) * 10.0).unsqueeze(0).repeat(3, 1, 1)
    conformers = rotation.apply(base, torch.deg2rad(torch.tensor([[0.0], [100.0], [200.0]]))).numpy()
    return conformers, numbers, topology


def rigid_copies(structure, n, rng, noise=0.0):
    copies = []
    for _ in range(n):
        r = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
        copies.append(structure @ r.T + rng.normal(size=3) * 5.0 + rng.normal(size=structure.shape) * noise)
    return np.array(copies)


def test_rmsd_matches_kabsch_and_ignores_rigid_motion(alanine_conformers, rng):
    conformers, numbers, _ = alanine_conformers
    copies = rigid_copies(conformers[0], 3, rng)
    structures = np.concatenate([conformers, copies])
    matrix = pairwise_rmsd(structures, numbers)
    for a in range(len(structures)):
        for b in range(len(structures)):
            assert matrix[a, b] == pytest.approx(kabsch_rmsd(structures[a], structures[b]), abs=2e-3)
    assert np.all(matrix[3:, 0] < 1e-3) and np.all(matrix[3:][:, 3:] < 1e-3)
    assert matrix[0, 1] > 0.5 and matrix[1, 2] > 0.5  # rotated phi moves atoms by Angstroms
    np.testing.assert_allclose(rmsd_to_set(copies, conformers, numbers), 0.0, atol=1e-3)


def test_dedup_collapses_rigid_copies_and_keeps_conformers(alanine_conformers, rng):
    conformers, numbers, _ = alanine_conformers
    structures = np.concatenate([rigid_copies(c, 4, rng, noise=0.005) for c in conformers])  # 12 = 3 conformers x 4
    uncertainty = rng.uniform(1.0, 2.0, size=12)
    chosen = select(structures, numbers, uncertainty, config=SelectionConfig(rmsd=0.1))
    assert chosen.counts["duplicates"] == 9 and chosen.counts["selected"] == 3
    groups = sorted(int(k) // 4 for k in chosen.indices)
    assert groups == [0, 1, 2]  # one per conformer
    for k in chosen.indices:  # the representative is the most uncertain copy of its conformer
        group = slice(4 * (k // 4), 4 * (k // 4) + 4)
        assert uncertainty[k] == uncertainty[group].max()
    assert list(uncertainty[chosen.indices]) == sorted(uncertainty[chosen.indices], reverse=True)
    # the dataset already holds conformer 1: its copies go
    near = select(structures, numbers, uncertainty, config=SelectionConfig(rmsd=0.1), reference=conformers[1:2])
    assert near.counts["near_dataset"] == 4 and sorted(int(k) // 4 for k in near.indices) == [0, 2]
    # rmsd = 0 switches deduplication off
    assert select(structures, numbers, uncertainty, config=SelectionConfig(rmsd=0.0)).counts["selected"] == 12


def test_threshold_energy_cap_budget_and_non_finite(alanine_conformers, rng):
    conformers, numbers, _ = alanine_conformers
    structures = np.concatenate([rigid_copies(c, 1, rng, noise=0.3) for c in np.repeat(conformers, 4, axis=0)])
    uncertainty = np.linspace(0.1, 1.2, 12)
    energy = np.linspace(0.0, 5.5, 12)[::-1].copy()
    uncertainty[5] = np.nan
    config = SelectionConfig(threshold=0.5, energy_max=4.0, rmsd=0.05, max_count=3)
    chosen = select(structures, numbers, uncertainty, energy, config)
    c = chosen.counts
    assert uncertainty[4] == 0.5  # exactly the threshold: Eq. 8 counts sigma^2 >= t as unknown
    assert c["non_finite"] == 1 and c["below_threshold"] == 4  # 0.1 ... 0.4 (< t is known)
    assert c["above_energy_cap"] == 0  # high energies sit on the low-uncertainty end here
    assert c["over_budget"] == 12 - 1 - 4 - 3 and c["selected"] == 3
    assert list(chosen.indices) == [11, 10, 9]
    assert np.all(uncertainty[chosen.indices] > 0.5) and np.all(energy[chosen.indices] <= 4.0)
    capped = select(structures, numbers, uncertainty, energy, SelectionConfig(energy_max=1.0, rmsd=0.0))
    assert np.all(energy[capped.indices] <= 1.0) and capped.counts["above_energy_cap"] == int(np.sum(energy > 1.0)) - 1


def test_selection_bad_input(alanine_conformers):
    conformers, numbers, _ = alanine_conformers
    with pytest.raises(ValueError, match="rmsd must be >= 0"):
        select(conformers, numbers, np.ones(3), config=SelectionConfig(rmsd=-1.0))
    with pytest.raises(ValueError, match="energy_max is set but no energies"):
        select(conformers, numbers, np.ones(3), config=SelectionConfig(energy_max=1.0))
    with pytest.raises(ValueError, match="uncertainty must have shape"):
        select(conformers, numbers, np.ones(2))
    with pytest.raises(ValueError, match=r"positions must have shape \(S, 22, 3\)"):
        select(conformers[:, :5], numbers, np.ones(3))
    with pytest.raises(ValueError, match="linkage"):
        select(conformers, numbers, np.ones(3), config=SelectionConfig(linkage="ward"))


def test_random_dihedral_displacements_are_uniform_and_reproducible(alanine_conformers):
    from advmd.committee import load_trainable_committee
    from advmd.systems import resource_path

    conformers, numbers, topology = alanine_conformers
    committee, _ = load_trainable_committee(resource_path("alanine-dipeptide-committee.pt"))
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    quadruples = peptide_dihedrals(topology)
    rotation = DihedralRotation(22, bonds, quadruples)
    seeds = np.repeat(conformers[:1], 40, axis=0)
    result = random_displacements(committee, numbers, seeds, rotation, amplitude=1.0, seed=3)
    again = random_displacements(committee, numbers, seeds, rotation, amplitude=1.0, seed=3)
    np.testing.assert_array_equal(result.positions, again.positions)
    assert np.all(np.abs(result.delta) <= 1.0) and result.delta.std() > 0.4  # uniform on [-1, 1]: std 0.577
    index = torch.tensor(quadruples)
    before = dihedral_angles(torch.tensor(seeds), index).numpy()
    after = dihedral_angles(torch.tensor(result.positions), index).numpy()
    change = np.angle(np.exp(1j * (after - before)))
    np.testing.assert_allclose(change, result.delta, atol=1e-5)  # float32 committee
    assert result.sigma_f2.shape == (40,) and np.all(result.sigma_f2 > 0)
    assert np.all(np.isfinite(result.mean_energy))
