"""Tabulated SchNet filters (fast inference): the same potential as the exact committee, to interpolation error."""

import pytest
import torch

from advmd.committee import (
    CommitteePotential,
    export_committee,
    load_committee,
    load_inference_committee,
    load_trainable_committee,
    make_bias,
)
from advmd.train.trainer import train_committee
from tests.conftest import BIAS_CASES, small_committee
from tests.unit.committee.test_potential import central_difference_forces, perturbed


def member_energies_forces(committee, positions, numbers, cell=None):
    x = positions.unsqueeze(0).repeat(committee.n_members, 1, 1).requires_grad_(True)
    energies = committee(x, numbers, cell)
    (gradient,) = torch.autograd.grad(energies.sum(), x)
    return energies.detach(), -gradient


def test_interpolation_error_falls_as_the_sixth_power_of_the_spacing(alanine):
    """Energies converge to the exact committee as h^6 (quintic Hermite), forces as h^5."""
    committee = small_committee()
    positions, numbers = perturbed(alanine)
    exact_e, exact_f = member_energies_forces(committee, positions, numbers)
    errors = []
    for h in (0.1, 0.05):
        e, f = member_energies_forces(committee.tabulated(h), positions, numbers)
        errors.append((float((e - exact_e).abs().max()), float((f - exact_f).abs().max())))
    (e1, f1), (e2, f2) = errors
    assert e2 < 1e-8 and f2 < 1e-7
    # halving h: 2^6 in energy and 2^5 in forces asymptotically (measured 2^6.2 and 2^4.9 from h = 0.1 to 0.05)
    assert e1 / e2 > 2**5.5 and f1 / f2 > 2**4.5
    # The default spacing is below float32 rounding for this committee.
    e, f = member_energies_forces(committee.tabulated(), positions, numbers)
    torch.testing.assert_close(e, exact_e, atol=1e-10, rtol=0)
    torch.testing.assert_close(f, exact_f, atol=1e-9, rtol=0)


@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_tabulated_potential_forces_equal_finite_differences_and_the_exact_potential(alanine, form, params, strength):
    """Forces (with the sigma_F bias: second derivatives of the tables) are gradients of the tabulated energy."""
    committee = small_committee()
    potential = CommitteePotential(committee.tabulated(0.05), make_bias(form, 4, **params)).double()
    exact = CommitteePotential(committee, make_bias(form, 4, **params)).double()
    positions, numbers = perturbed(alanine)
    s = torch.tensor(strength, dtype=torch.float64)
    out = potential(positions, numbers, None, s)
    reference = central_difference_forces(potential, positions, numbers, None, s)
    torch.testing.assert_close(out["forces"], reference, atol=2e-6, rtol=1e-5)
    expected = exact(positions, numbers, None, s)
    for key in ("energy", "forces", "sigma_f2", "bias_energy"):
        torch.testing.assert_close(out[key], expected[key], atol=2e-7, rtol=1e-7)
    if form != "none":
        assert float((out["forces"] - out["mean_forces"]).abs().max()) > 1e-3


def test_second_derivatives_equal_the_exact_committee(alanine):
    """A Hessian-vector product (what the sigma_F bias and attacks differentiate) matches the exact model."""
    committee = small_committee(n_members=2)
    positions, numbers = perturbed(alanine, seed=8)
    v = torch.randn(positions.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    products = []
    for model in (committee, committee.tabulated()):
        x = positions.unsqueeze(0).repeat(2, 1, 1).requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(x, numbers, None).sum(), x, create_graph=True)
        (hvp,) = torch.autograd.grad((gradient * v).sum(), x)
        products.append(hvp)
    assert float(products[0].abs().max()) > 1e-2
    torch.testing.assert_close(products[1], products[0], atol=1e-7, rtol=1e-6)


def test_energy_is_twice_continuously_differentiable_across_a_knot():
    """A dimer at a knot: the polynomials of the two intervals meet with equal value, slope and curvature (by
    autograd, each member on its own: a C1-only table would leave a curvature jump of about 3e-3 here)."""
    committee = small_committee(n_members=2).tabulated(0.1)
    numbers = torch.tensor([6, 8])
    knot = 15 * committee.table_spacing

    def derivatives(r):
        distance = torch.tensor(r, dtype=torch.float64, requires_grad=True)
        second = torch.stack([distance, torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)])
        x = torch.stack([torch.zeros(3, dtype=torch.float64), second]).expand(2, 2, 3)
        energies = committee(x, numbers, None)
        out = []
        for m in range(2):
            (slope,) = torch.autograd.grad(energies[m], distance, create_graph=True, retain_graph=True)
            (curvature,) = torch.autograd.grad(slope, distance, retain_graph=True)
            out.append((float(energies[m].detach()), float(slope.detach()), float(curvature)))
        return out

    left, right = derivatives(knot - 1e-9), derivatives(knot + 1e-9)
    for (e_l, g_l, c_l), (e_r, g_r, c_r) in zip(left, right):
        assert abs(e_l - e_r) < 1e-8 and abs(g_l - g_r) < 1e-7
        assert abs(c_l - c_r) < 1e-6  # continuous curvature (it changes by ~1e-8 over these 2e-9 A)
    assert max(abs(c) for _, _, c in left) > 0.5 and max(abs(g) for _, g, _ in left) > 1e-2  # real slope and curvature


@pytest.mark.parametrize("per_pass", [1, 2])
def test_members_in_passes_and_selected_members_keep_their_tables(alanine, per_pass):
    committee = small_committee().tabulated()
    positions, numbers = perturbed(alanine)
    s = torch.tensor(0.2, dtype=torch.float64)
    one = CommitteePotential(committee, make_bias("hal", 4), pass_atoms=0)
    passes = CommitteePotential(committee, make_bias("hal", 4), pass_atoms=per_pass * positions.shape[0])
    assert passes._member_passes(positions.shape[0]) == list(range(0, 4, per_pass))
    a, b = one(positions, numbers, None, s), passes(positions, numbers, None, s)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-12, rtol=1e-10)
    pair = committee.select_members([2, 0])
    assert pair.uses_tables
    e, f = member_energies_forces(pair, positions, numbers)
    e_all, f_all = member_energies_forces(committee, positions, numbers)
    torch.testing.assert_close(e, e_all[[2, 0]], atol=1e-12, rtol=0)
    torch.testing.assert_close(f, f_all[[2, 0]], atol=1e-12, rtol=0)


def test_periodic_box_matches_the_exact_committee():
    committee = small_committee(n_members=3, cutoff=3.0)
    gen = torch.Generator().manual_seed(5)
    cell = torch.tensor([[7.0, 0.0, 0.0], [1.0, 7.5, 0.0], [-0.5, 1.2, 8.0]], dtype=torch.float64)
    positions = torch.rand((30, 3), generator=gen, dtype=torch.float64) * 7.0
    numbers = torch.tensor([8, 1, 1] * 10)
    e, f = member_energies_forces(committee.tabulated(), positions, numbers, cell)
    exact_e, exact_f = member_energies_forces(committee, positions, numbers, cell)
    torch.testing.assert_close(e, exact_e, atol=1e-9, rtol=0)
    torch.testing.assert_close(f, exact_f, atol=1e-8, rtol=0)


def test_export_round_trip_and_training_refusal(alanine, tmp_path):
    committee = small_committee()
    potential = CommitteePotential(committee, make_bias("udd", 4, width=1.0))
    path = export_committee(potential, tmp_path / "fast.pt", tabulate=0.05)
    assert not potential.committee.uses_tables  # the caller's potential is untouched
    module, metadata = load_committee(path)
    assert metadata["tabulated"]["spacing_angstrom"] == pytest.approx(0.05)
    positions, numbers = perturbed(alanine)
    s = torch.tensor(0.3, dtype=torch.float64)
    loaded = module(positions, numbers, None, s)
    eager = CommitteePotential(committee.tabulated(0.05), make_bias("udd", 4, width=1.0))(positions, numbers, None, s)
    torch.testing.assert_close(loaded["forces"], eager["forces"], atol=1e-12, rtol=0)
    # Batched MD and attacks get the file's own function: the tables, with the same spacing.
    inference, _ = load_inference_committee(path)
    assert inference.uses_tables and inference.table_intervals == committee.tabulated(0.05).table_intervals
    e, f = member_energies_forces(inference, positions, numbers)
    torch.testing.assert_close(e, loaded["member_energies"], atol=1e-12, rtol=0)
    torch.testing.assert_close(f, loaded["member_forces"], atol=1e-12, rtol=0)
    # Training gets the exact model back, with the same weights.
    trainable, _ = load_trainable_committee(path)
    assert not trainable.uses_tables
    for (name, a), (_, b) in zip(trainable.named_parameters(), committee.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(ValueError, match="tabulated inference copy"):
        train_committee(committee.tabulated(), None)
    with pytest.raises(ValueError, match="spacing must be in"):
        committee.tabulated(0.0)
    with pytest.raises(ValueError, match="already tabulated"):
        committee.tabulated().tabulated()
    with pytest.raises(RuntimeError, match="load the weights into the exact committee"):
        committee.tabulated().load_state_dict(committee.state_dict())


def test_float32_tables_agree_with_the_float32_exact_committee(alanine):
    committee = small_committee().float()
    positions, numbers = perturbed(alanine)
    positions = positions.float()
    fast = committee.tabulated()
    assert fast.filter_table.dtype == torch.float32 and fast.member_table.dtype == torch.float32
    e, f = member_energies_forces(fast, positions, numbers)
    exact_e, exact_f = member_energies_forces(committee, positions, numbers)
    torch.testing.assert_close(e, exact_e, atol=2e-5, rtol=1e-6)
    torch.testing.assert_close(f, exact_f, atol=2e-5, rtol=1e-5)
    scripted = torch.jit.script(fast)
    x = positions.unsqueeze(0).repeat(4, 1, 1)
    torch.testing.assert_close(scripted(x, numbers, None), fast(x, numbers, None), atol=0, rtol=0)


@pytest.mark.parametrize("n_atoms", [1, 2])
def test_no_pair_within_the_cutoff_gives_the_exact_atomic_energies_and_zero_forces(n_atoms):
    """An empty pair list (one atom, or two beyond the cutoff) passes through the table lookup."""
    committee = small_committee()
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0 * committee.cutoff]], dtype=torch.float64)[:n_atoms]
    numbers = torch.tensor([8, 1])[:n_atoms]
    exact_e, exact_f = member_energies_forces(committee, positions, numbers)
    e, f = member_energies_forces(committee.tabulated(), positions, numbers)
    torch.testing.assert_close(e, exact_e, atol=1e-12, rtol=0)
    assert bool((f == 0).all()) and bool((exact_f == 0).all())
    passes = CommitteePotential(committee.tabulated(), make_bias("hal", committee.n_members), pass_atoms=1)
    out = passes(positions, numbers, None, torch.tensor(0.1, dtype=torch.float64))
    assert bool((out["forces"] == 0).all()) and float(out["sigma_f2"]) == 0.0
