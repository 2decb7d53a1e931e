"""Pair finding equals a brute-force search over periodic images."""

import itertools

import numpy as np
import pytest
import torch

from advmd.committee.neighbors import check_cell, neighbor_pairs


def brute_force_pairs(positions, cutoff, cell):
    pairs = {}
    n = len(positions)
    images = [np.zeros(3)] if cell is None else [np.array(k) @ cell for k in itertools.product((-1, 0, 1), repeat=3)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            for shift in images:
                d = positions[j] - positions[i] + shift
                if np.linalg.norm(d) < cutoff:
                    assert (i, j) not in pairs, "two images within the cutoff: box too small for this test"
                    pairs[(i, j)] = d
    return pairs


@pytest.mark.parametrize(
    "cell",
    [None, np.diag([9.0, 10.0, 11.0]), np.array([[9.0, 0.0, 0.0], [3.0, 9.5, 0.0], [-2.5, 4.0, 10.0]])],
    ids=["open", "orthorhombic", "triclinic"],
)
@pytest.mark.parametrize("method", ["all", "cells"])
def test_pairs_match_brute_force(rng, cell, method):
    positions = rng.uniform(0.0, 10.0, size=(60, 3))
    cutoff = 3.5
    cell_t = None if cell is None else torch.tensor(cell)
    i, j, shifts = neighbor_pairs(torch.tensor(positions), cutoff, cell_t, block_size=16, method=method)
    found = {}
    for a, b, s in zip(i.tolist(), j.tolist(), shifts.numpy()):
        found[(a, b)] = positions[b] - positions[a] + s
    expected = brute_force_pairs(positions, cutoff, cell)
    assert set(found) == set(expected)
    for key, vector in expected.items():
        np.testing.assert_allclose(found[key], vector, atol=1e-10)
    hi, hj, hshifts = neighbor_pairs(torch.tensor(positions), cutoff, cell_t, block_size=16, half=True, method=method)
    assert bool((hj > hi).all())
    half = {(a, b): positions[b] - positions[a] + s for a, b, s in zip(hi.tolist(), hj.tolist(), hshifts.numpy())}
    assert set(half) == {key for key in expected if key[0] < key[1]}
    for key, vector in half.items():
        np.testing.assert_allclose(vector, expected[key], atol=1e-10)


@pytest.mark.parametrize("method", ["all", "cells"])
def test_structures_in_one_batch_are_never_paired(rng, method):
    positions = torch.tensor(rng.uniform(0.0, 4.0, size=(20, 3)))
    structure_index = torch.tensor([0] * 8 + [1] * 12)
    i, j, _ = neighbor_pairs(positions, 10.0, None, structure_index=structure_index, method=method)
    assert bool((structure_index[i] == structure_index[j]).all())
    assert len(i) == 8 * 7 + 12 * 11
    # Half lists in several row blocks (each block compares its rows with the atoms from its first row on).
    hi, hj, _ = neighbor_pairs(positions, 10.0, None, 6, structure_index, True, method)
    assert bool((structure_index[hi] == structure_index[hj]).all()) and bool((hj > hi).all())
    assert {(a, b) for a, b in zip(hi.tolist(), hj.tolist())} == {(a, b) for a, b in zip(i.tolist(), j.tolist()) if a < b}


@pytest.mark.parametrize(
    "cell",
    [
        None,
        np.diag([7.5, 16.0, 31.0]),  # 2, 4 and 8 bins: a periodic axis of 2 bins must not repeat a neighbour
        np.diag([7.2, 7.3, 7.4]),  # one bin per axis
        np.array([[20.0, 0.0, 0.0], [7.0, 18.0, 0.0], [-6.0, 5.0, 22.0]]),
    ],
    ids=["open", "two-bins", "one-bin", "triclinic"],
)
@pytest.mark.parametrize("half", [False, True])
def test_cell_list_equals_all_pairs(rng, cell, half):
    """Same pairs, in the same order, with the same shifts; atoms outside the box included."""
    cell_t = None if cell is None else torch.tensor(cell)
    extent = 25.0 if cell is None else float(np.max(np.diag(cell)))
    positions = torch.tensor(rng.uniform(-0.3 * extent, 1.3 * extent, size=(700, 3)))
    reference = neighbor_pairs(positions, 3.6, cell_t, half=half, method="all")
    fast = neighbor_pairs(positions, 3.6, cell_t, half=half, method="cells")
    assert len(reference[0]) > 100
    for a, b in zip(reference, fast):
        assert torch.equal(a, b)


def test_large_box_pair_search_is_memory_bounded():
    """3000 atoms at liquid-water density: found in blocks, never an N x N x F tensor."""
    gen = torch.Generator().manual_seed(0)
    side = (3000 / 0.1) ** (1.0 / 3.0)  # ~0.1 atoms per cubic Angstrom
    positions = torch.rand((3000, 3), generator=gen, dtype=torch.float64) * side
    cell = torch.eye(3, dtype=torch.float64) * side
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        i, j, shifts = neighbor_pairs(positions, 5.0, cell)
    # No operation allocates an all-pairs tensor: N x N float64 alone is 72 MB (the N x N x 3 vectors 216 MB).
    largest = max(event.cpu_memory_usage for event in profile.events())
    assert largest < 50e6
    # Expected pair count: N * density * 4/3 pi r^3 (uniform random gas).
    expected = 3000 * 0.1 * 4.0 / 3.0 * np.pi * 5.0**3
    assert abs(len(i) - expected) / expected < 0.05
    d = (positions[j] - positions[i] + shifts).norm(dim=1)
    assert float(d.max()) < 5.0


@pytest.mark.parametrize("far", [[1.0e4, 1.0e4, 1.0e4], [1.0e6, 3.0, 3.0]], ids=["corner", "one-axis"])
def test_one_far_atom_does_not_blow_up_the_cell_list(rng, far):
    """A molecule leaving a cluster: bins cover the bounding box, so one atom 10^4 A away meant 8e9 bins (64 GB of
    counts). Capped, with the same pairs as the all-pairs search."""
    positions = torch.tensor(np.vstack([rng.uniform(0.0, 30.0, size=(1100, 3)), [far]]))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        fast = neighbor_pairs(positions, 5.0, None, method="cells")
    assert max(event.cpu_memory_usage for event in profile.events()) < 50e6
    reference = neighbor_pairs(positions, 5.0, None, method="all")
    for a, b in zip(reference, fast):
        assert torch.equal(a, b)


def test_check_cell_errors():
    with pytest.raises(ValueError, match="exceeds half the smallest box width"):
        check_cell(torch.eye(3) * 8.0, 5.0)
    with pytest.raises(ValueError, match="lower triangular"):
        check_cell(torch.tensor([[10.0, 1.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]]), 3.0)
