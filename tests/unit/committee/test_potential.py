"""Physics of the committee potential: gradients, invariances, statistics, bias formulas."""

import math

import numpy as np
import pytest
import torch

from advmd.committee import (
    CommitteePotential,
    CustomBias,
    SchNetCommittee,
    SingleMember,
    TorchScriptCommittee,
    make_bias,
)
from tests.conftest import BIAS_CASES, SPECIES, small_committee, small_potential


def perturbed(alanine, scale=0.05, seed=3):
    positions, numbers = alanine
    gen = torch.Generator().manual_seed(seed)
    return positions + scale * torch.randn(positions.shape, generator=gen, dtype=torch.float64), numbers


def central_difference_forces(potential, positions, numbers, cell, strength, h=1e-5, key="energy"):
    """-d(output[key])/dR by central differences (key: energy, mean_energy or bias_energy)."""
    forces = torch.zeros_like(positions)
    for a in range(positions.shape[0]):
        for k in range(3):
            plus = positions.clone()
            plus[a, k] += h
            minus = positions.clone()
            minus[a, k] -= h
            e_plus = float(potential(plus, numbers, cell, strength)[key])
            e_minus = float(potential(minus, numbers, cell, strength)[key])
            forces[a, k] = -(e_plus - e_minus) / (2 * h)
    return forces


@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_forces_equal_finite_differences(alanine, form, params, strength):
    potential = small_potential(form, **params)
    positions, numbers = perturbed(alanine)
    s = torch.tensor(strength, dtype=torch.float64)
    out = potential(positions, numbers, None, s)
    if form != "none":  # the bias force must matter, or this test checks nothing
        assert float((out["forces"] - out["mean_forces"]).abs().max()) > 1e-3
    reference = central_difference_forces(potential, positions, numbers, None, s)
    torch.testing.assert_close(out["forces"], reference, atol=2e-6, rtol=1e-5)


def test_mean_and_bias_forces_separately_equal_finite_differences(alanine):
    """Total = mean + bias: check the bias part alone against differences of the bias energy."""
    potential = small_potential("hal")
    positions, numbers = perturbed(alanine)
    s = torch.tensor(0.2, dtype=torch.float64)
    out = potential(positions, numbers, None, s)
    mean_fd = central_difference_forces(potential, positions, numbers, None, s, key="mean_energy")
    bias_fd = central_difference_forces(potential, positions, numbers, None, s, key="bias_energy")
    torch.testing.assert_close(out["mean_forces"], mean_fd, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(out["forces"] - out["mean_forces"], bias_fd, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_fast_path_equals_full_autograd(alanine, form, params, strength):
    potential = small_potential(form, **params)
    positions, numbers = perturbed(alanine)
    s = torch.tensor(strength, dtype=torch.float64)
    fast = potential(positions, numbers, None, s)
    full = potential.evaluate(positions, numbers, None, s, True)
    torch.testing.assert_close(fast["energy"], full["energy"].detach())
    torch.testing.assert_close(fast["forces"], full["forces"].detach(), atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
@pytest.mark.parametrize("per_pass", [1, 3])
def test_members_in_passes_equal_one_pass(alanine, form, params, strength, per_pass):
    """Large-system path (a few members per pass, HVP pass for sigma_F): same outputs, scripted too."""
    committee = small_committee()
    positions, numbers = perturbed(alanine)
    n_atoms = positions.shape[0]
    s = torch.tensor(strength, dtype=torch.float64)
    one = CommitteePotential(committee, make_bias(form, 4, **params), pass_atoms=0)
    passes = torch.jit.script(CommitteePotential(committee, make_bias(form, 4, **params), pass_atoms=per_pass * n_atoms))
    assert passes._member_passes(n_atoms) == list(range(0, 4, per_pass))
    a = one(positions, numbers, None, s)
    for _ in range(3):  # the profiling executor re-optimises after the first calls
        b = passes(positions, numbers, None, s)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-12, rtol=1e-10)
        assert not b[key].requires_grad, key
    # Not a tautology: the bias force is there and large enough to matter.
    if form != "none":
        assert float((b["forces"] - b["mean_forces"]).abs().max()) > 1e-4


def test_members_in_passes_forces_equal_finite_differences_in_a_box():
    committee = small_committee(n_members=3, cutoff=3.0)
    gen = torch.Generator().manual_seed(5)
    cell = torch.tensor([[7.0, 0.0, 0.0], [1.0, 7.5, 0.0], [-0.5, 1.2, 8.0]], dtype=torch.float64)
    positions = torch.rand((30, 3), generator=gen, dtype=torch.float64) * 7.0
    numbers = torch.tensor(([8, 1, 1] * 10))
    potential = CommitteePotential(committee, make_bias("hal", 3), pass_atoms=30).double()
    s = torch.tensor(0.3, dtype=torch.float64)
    out = potential(positions, numbers, cell, s)
    expected = central_difference_forces(potential, positions, numbers, cell, s)
    torch.testing.assert_close(out["forces"], expected, atol=5e-6, rtol=1e-5)


def random_rotation(seed):
    gen = np.random.default_rng(seed)
    q, r = np.linalg.qr(gen.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return torch.tensor(q)


@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_rotation_translation_invariance(alanine, form, params, strength):
    potential = small_potential(form, **params)
    positions, numbers = perturbed(alanine)
    s = torch.tensor(strength, dtype=torch.float64)
    rotation = random_rotation(7)
    moved = positions @ rotation.T + torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)
    a, b = potential(positions, numbers, None, s), potential(moved, numbers, None, s)
    torch.testing.assert_close(b["energy"], a["energy"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(b["forces"], a["forces"] @ rotation.T, atol=1e-9, rtol=1e-8)
    torch.testing.assert_close(b["sigma_f2"], a["sigma_f2"], atol=1e-12, rtol=1e-9)


def test_permutation_of_like_atoms(alanine):
    potential = small_potential("udd", width=1.0)
    positions, numbers = perturbed(alanine)
    hydrogens = [k for k, z in enumerate(numbers.tolist()) if z == 1]
    perm = list(range(len(numbers)))
    perm[hydrogens[0]], perm[hydrogens[-1]] = perm[hydrogens[-1]], perm[hydrogens[0]]
    perm_t = torch.tensor(perm)
    s = torch.tensor(0.3, dtype=torch.float64)
    a = potential(positions, numbers, None, s)
    b = potential(positions[perm_t], numbers[perm_t], None, s)
    torch.testing.assert_close(b["energy"], a["energy"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(b["forces"], a["forces"][perm_t], atol=1e-9, rtol=1e-8)


def water_box(n_molecules=24, side=10.0, seed=0):
    """Random water-like box: O-H 0.96 A, H-O-H 104.5 deg, random orientations; Angstrom."""
    gen = np.random.default_rng(seed)
    grid = int(math.ceil(n_molecules ** (1 / 3)))
    spacing = side / grid
    positions, numbers = [], []
    for k in range(n_molecules):
        center = (np.array(np.unravel_index(k, (grid, grid, grid))) + 0.5) * spacing
        q, _ = np.linalg.qr(gen.normal(size=(3, 3)))
        half = math.radians(104.5) / 2
        h1 = np.array([math.sin(half), math.cos(half), 0.0]) * 0.96
        h2 = np.array([-math.sin(half), math.cos(half), 0.0]) * 0.96
        positions += [center, center + q @ h1, center + q @ h2]
        numbers += [8, 1, 1]
    return torch.tensor(np.array(positions)), torch.tensor(numbers)


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
def test_periodic_shift_by_box_vector_and_finite_differences(triclinic):
    potential = small_potential("udd", cutoff=4.0, width=3.0)
    positions, numbers = water_box()
    cell = torch.diag(torch.tensor([10.0, 10.0, 10.0], dtype=torch.float64))
    if triclinic:
        cell[1, 0] = 2.0
        cell[2, 0] = -1.5
        cell[2, 1] = 3.0
    s = torch.tensor(0.5, dtype=torch.float64)
    ref = potential(positions, numbers, cell, s)
    assert float((ref["forces"] - ref["mean_forces"]).abs().max()) > 1e-3  # bias active
    shifted = positions.clone()
    shifted[0] += cell[1]
    shifted[5] -= cell[2]
    shifted[7] += cell[0] + cell[2]
    out = potential(shifted, numbers, cell, s)
    torch.testing.assert_close(out["energy"], ref["energy"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"], atol=1e-9, rtol=1e-8)
    # Forces are the gradient across the periodic boundary too (check a few atoms).
    h = 1e-5
    for a in (0, 1, 40):
        for k in range(3):
            p, m = positions.clone(), positions.clone()
            p[a, k] += h
            m[a, k] -= h
            fd = -(float(potential(p, numbers, cell, s)["energy"]) - float(potential(m, numbers, cell, s)["energy"])) / (2 * h)
            assert float(ref["forces"][a, k]) == pytest.approx(fd, abs=2e-6, rel=1e-5)


def test_identical_members_give_single_model_and_zero_spread(alanine):
    committee = small_committee(n_members=4, seed=5)
    single = committee.select_members([2])
    clones = committee.select_members([2, 2, 2])
    potential = CommitteePotential(clones, make_bias("udd", 3, width=0.05)).double()
    positions, numbers = perturbed(alanine)
    out = potential(positions, numbers, None, torch.tensor(1.0, dtype=torch.float64))
    single_energy = single(positions.unsqueeze(0), numbers, None)[0].detach()
    torch.testing.assert_close(out["mean_energy"], single_energy)
    # Zero up to float64 rounding of the mean (relative 1e-24 of E^2, F^2).
    assert float(out["sigma_e2"]) <= 1e-24 * float(single_energy) ** 2
    assert float(out["sigma_f2"]) <= 1e-24 * float((out["mean_forces"] ** 2).mean())
    assert float(out["bias_energy"]) == pytest.approx(0.0, abs=1e-12)  # exp(0) - 1


def test_reported_variances_equal_numpy_on_member_outputs(alanine):
    potential = small_potential("none", n_members=5)
    positions, numbers = perturbed(alanine)
    out = potential(positions, numbers, None, torch.tensor(0.0, dtype=torch.float64))
    energies = out["member_energies"].numpy()
    forces = out["member_forces"].numpy()
    assert float(out["sigma_e2"]) == pytest.approx(np.var(energies, ddof=1), rel=1e-10)
    assert float(out["sigma_f2"]) == pytest.approx(np.var(forces, axis=0, ddof=1).mean(), rel=1e-10)
    np.testing.assert_allclose(out["mean_forces"].numpy(), forces.mean(0), rtol=1e-12, atol=1e-14)
    assert float(out["mean_energy"]) == pytest.approx(energies.mean(), rel=1e-12)


def test_member_forces_are_each_members_gradient(alanine):
    committee = small_committee(n_members=3)
    potential = CommitteePotential(committee)
    positions, numbers = perturbed(alanine)
    out = potential(positions, numbers, None, torch.tensor(0.0, dtype=torch.float64))
    for k in range(3):
        member = committee.select_members([k])
        p = positions.clone().requires_grad_(True)
        energy = member(p.unsqueeze(0), numbers, None)[0]
        (gradient,) = torch.autograd.grad(energy, p)
        torch.testing.assert_close(out["member_forces"][k], -gradient)


@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_bias_energy_follows_formula(alanine, form, params, strength):
    potential = small_potential(form, n_members=4, **params)
    positions, numbers = perturbed(alanine)
    out = potential(positions, numbers, None, torch.tensor(strength, dtype=torch.float64))
    sigma_e2, sigma_f2 = float(out["sigma_e2"]), float(out["sigma_f2"])
    n_atoms, m = positions.shape[0], 4
    if form == "none":
        expected = 0.0
    elif form == "udd":
        expected = strength * (math.exp(-(m - 1) * sigma_e2 / (m * n_atoms * params["width"] ** 2)) - 1.0)
    else:
        expected = -strength * math.sqrt(sigma_f2 + 1e-12)
    assert float(out["bias_energy"]) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert float(out["energy"]) == pytest.approx(float(out["mean_energy"]) + expected, rel=1e-12)


def test_scripted_equals_eager(alanine):
    for form, params, strength in BIAS_CASES:
        potential = small_potential(form, **params)
        scripted = torch.jit.script(potential)
        positions, numbers = perturbed(alanine)
        s = torch.tensor(strength, dtype=torch.float64)
        a, b = potential(positions, numbers, None, s), scripted(positions, numbers, None, s)
        for key in ("energy", "forces", "sigma_e2", "sigma_f2", "bias_energy", "member_forces"):
            torch.testing.assert_close(b[key], a[key], atol=1e-12, rtol=1e-12)


def test_generic_committee_of_scripted_members_equals_batched(alanine, tmp_path):
    batched = small_committee(n_members=3, seed=9)
    paths = []
    for k in range(3):
        member = torch.jit.script(SingleMember(batched.select_members([k])))
        path = tmp_path / f"member{k}.pt"
        member.save(str(path))
        paths.append(path)
    generic = TorchScriptCommittee(paths, species=SPECIES, cutoff=batched.cutoff)
    positions, numbers = perturbed(alanine)
    s = torch.tensor(0.1, dtype=torch.float64)
    a = CommitteePotential(batched, make_bias("hal", 3))(positions, numbers, None, s)
    b = torch.jit.script(CommitteePotential(generic, make_bias("hal", 3)))(positions, numbers, None, s)
    for key in ("energy", "forces", "member_energies", "sigma_f2"):
        torch.testing.assert_close(b[key], a[key], atol=1e-12, rtol=1e-10)


class QuadraticBias(torch.nn.Module):
    def forward(self, sigma_e2: torch.Tensor, sigma_f2: torch.Tensor, n_atoms: int, strength: torch.Tensor) -> torch.Tensor:
        return -strength * (sigma_e2 + 0.5 * sigma_f2)


def test_custom_bias_forces_equal_finite_differences(alanine):
    committee = small_committee(n_members=3)
    potential = CommitteePotential(committee, CustomBias(QuadraticBias())).double()
    positions, numbers = perturbed(alanine)
    s = torch.tensor(0.7, dtype=torch.float64)
    out = potential(positions, numbers, None, s)
    expected_bias = -0.7 * (float(out["sigma_e2"]) + 0.5 * float(out["sigma_f2"]))
    assert float(out["bias_energy"]) == pytest.approx(expected_bias, rel=1e-12)
    reference = central_difference_forces(potential, positions, numbers, None, s)
    torch.testing.assert_close(out["forces"], reference, atol=2e-6, rtol=1e-5)


def test_bad_inputs_raise_named_errors(alanine):
    potential = small_potential("udd", width=0.05)
    positions, numbers = alanine
    bad = positions.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        potential(bad, numbers, None, torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="strength must be >= 0"):
        potential(positions, numbers, None, torch.tensor(-1.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="strength must be finite"):
        potential(positions, numbers, None, torch.tensor(float("inf"), dtype=torch.float64))
    lithium = numbers.clone()
    lithium[5] = 3  # Z=3 lies inside the lookup table's range, where SchNet's index is -1
    for model in (potential, torch.jit.script(potential)):
        with pytest.raises((ValueError, torch.jit.Error), match="elements the committee was not trained on"):
            model(positions, lithium, None, torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown bias form 'metad'.*'hal', 'none', 'udd'"):
        make_bias("metad", 4)
    with pytest.raises(ValueError, match="width B must be a finite energy > 0"):
        make_bias("udd", 4, width=0.0)
    with pytest.raises(ValueError, match="at least 2 members"):
        CommitteePotential(SchNetCommittee(SPECIES, n_members=1))
    with pytest.raises(ValueError, match="n_features must be an integer >= 2"):
        SchNetCommittee(SPECIES, n_features=0)
    with pytest.raises(ValueError, match="species must be atomic numbers"):
        SchNetCommittee([0, 1])
    upper = torch.eye(3, dtype=torch.float64) * 20.0
    upper[0, 1] = 1.0
    with pytest.raises(ValueError, match="cell must be in OpenMM reduced form"):
        potential(positions, numbers, upper, torch.tensor(0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias was built for N_M=5 members but the committee has 4"):
        CommitteePotential(small_committee(n_members=4), make_bias("udd", 5, width=1.0))


@pytest.mark.parametrize("triclinic", [False, True], ids=["orthorhombic", "triclinic"])
def test_energy_follows_a_cell_deformation(triclinic):
    """Periodic images are multiples of the box vectors in the graph, so dE/d(strain) (the virial) is exact."""
    potential = small_potential("none", cutoff=4.0)
    positions, numbers = water_box()
    cell = torch.tensor(
        [[10.0, 0.0, 0.0], [1.5 if triclinic else 0.0, 10.0, 0.0], [0.8 if triclinic else 0.0, -1.1 if triclinic else 0.0, 10.0]]
    )
    cell = cell.double()
    upper = torch.triu(torch.ones(3, 3, dtype=torch.float64))

    def energy(strain):
        deformation = torch.eye(3, dtype=torch.float64) + strain * upper
        return potential.evaluate(
            positions @ deformation.T, numbers, cell @ deformation.T, torch.tensor(0.0, dtype=torch.float64), True
        )["energy"]

    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    gradient = torch.autograd.grad(energy(strain), strain)[0]
    h = 1e-5
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]:
        step = torch.zeros(3, 3, dtype=torch.float64)
        step[a, b] = h
        numeric = (energy(step) - energy(-step)).item() / (2 * h)
        assert gradient[a, b].item() == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_member_energies_on_a_shared_pair_list_equal_a_fresh_search_in_a_box():
    """The pair list found once per call (for every pass) gives each member's energy and forces of its own search."""
    # Eager: the profiling executor would re-optimise a scripted model between the calls compared.
    committee = small_committee(n_members=3, cutoff=3.0).double()
    gen = torch.Generator().manual_seed(11)
    cell = torch.tensor([[7.0, 0.0, 0.0], [1.0, 7.5, 0.0], [-0.5, 1.2, 8.0]], dtype=torch.float64)
    positions = torch.rand((30, 3), generator=gen, dtype=torch.float64) * 9.0 - 1.0  # some atoms outside the box
    numbers = torch.tensor([8, 1, 1] * 10)
    pairs = committee.pair_list(positions, cell)
    assert pairs[0].shape[0] > 30 and bool((pairs[0] < pairs[1]).all())
    for first in range(3):
        x_fresh = positions.unsqueeze(0).clone().requires_grad_(True)
        x_shared = positions.unsqueeze(0).clone().requires_grad_(True)
        fresh = committee.member_energies(x_fresh, numbers, cell, first)
        shared = committee.member_energies(x_shared, numbers, cell, first, pairs)
        torch.testing.assert_close(shared, fresh, atol=0, rtol=0)
        (g_fresh,) = torch.autograd.grad(fresh.sum(), x_fresh)
        (g_shared,) = torch.autograd.grad(shared.sum(), x_shared)
        torch.testing.assert_close(g_shared, g_fresh, atol=0, rtol=0)
    scripted = torch.jit.script(committee)
    for got, expected in zip(scripted.pair_list(positions, cell), pairs):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
