"""The torch.compile path (CompiledCommitteePotential) computes what the TorchScript/eager potential computes."""

import pytest
import torch
from torch._dynamo.utils import counters

from advmd.committee import CommitteePotential, CoordinateMLPCommittee, export_committee, load_committee, make_bias
from advmd.committee.compiled import CompiledCommitteePotential, eager_committee
from tests.conftest import small_committee
from tests.unit.committee.test_potential import perturbed, water_box

KEYS = (
    "energy",
    "forces",
    "mean_energy",
    "mean_forces",
    "member_energies",
    "member_forces",
    "bias_energy",
    "sigma_e2",
    "sigma_f2",
)


def assert_same(out, ref, rtol=1e-10):
    """Equal to float64 rounding (the compiled kernels sum in another order)."""
    for key in KEYS:
        scale = float(ref[key].abs().max()) + 1e-12
        assert float((out[key] - ref[key]).abs().max()) <= rtol * scale, key
    assert int(out["max_deviation_atom"]) == int(ref["max_deviation_atom"])


def test_compiled_first_order_path_equals_the_potential(alanine):
    """Mean forces and a UDD bias: every output of the compiled passes equals the eager potential's."""
    potential = CommitteePotential(small_committee(), make_bias("udd", 4, width=1.0)).double()
    positions, numbers = perturbed(alanine)
    strength = torch.tensor(0.3, dtype=torch.float64)
    compiled = CompiledCommitteePotential(potential)
    graphs = counters["stats"]["unique_graphs"]
    for scale in (0.0, 0.05):  # a second geometry: new pair count, no recompilation needed for correctness
        x = positions + scale * torch.sin(torch.arange(positions.numel(), dtype=torch.float64)).view_as(positions)
        assert_same(compiled(x, numbers, None, strength), potential(x, numbers, None, strength))
    assert counters["stats"]["unique_graphs"] > graphs  # the members really went through torch.compile
    lithium = numbers.clone()
    lithium[5] = 3  # an unknown element: the compiled lookup would read its index -1 as the last species
    with pytest.raises(ValueError, match="elements the committee was not trained on"):
        compiled(positions, lithium, None, strength)


@pytest.mark.slow
def test_compiled_passes_with_a_sigma_f_bias_and_a_periodic_box():
    """HAL (sigma_F) bias, one member per pass (compiled first pass, eager Hessian-vector products), periodic cell."""
    positions, numbers = water_box(n_molecules=24, side=10.0)
    cell = torch.eye(3, dtype=torch.float64) * 10.0
    potential = CommitteePotential(small_committee(), make_bias("hal", 4), pass_atoms=80).double()
    compiled = CompiledCommitteePotential(potential)
    strength = torch.tensor(0.2, dtype=torch.float64)
    out = compiled(positions, numbers, cell, strength)
    assert_same(out, potential(positions, numbers, cell, strength))
    assert float(out["bias_energy"]) != 0.0


@pytest.mark.slow
def test_compiled_copy_of_an_exported_tabulated_file(tmp_path, alanine):
    """From a loaded TorchScript file: the eager copy has the file's weights and tables, and equals the file."""
    potential = CommitteePotential(small_committee(), make_bias("udd", 4, width=1.0)).double()
    path = export_committee(potential, tmp_path / "c.pt", default_strength=0.0, tabulate=0.05)
    scripted, _ = load_committee(path)
    copy = eager_committee(scripted.committee)
    assert copy.uses_tables and copy.table_spacing == pytest.approx(float(scripted.committee.table_spacing))
    assert torch.equal(copy.filter_table, scripted.committee.filter_table)
    positions, numbers = perturbed(alanine)
    strength = torch.tensor(0.3, dtype=torch.float64)
    assert_same(
        CompiledCommitteePotential(scripted)(positions, numbers, None, strength), scripted(positions, numbers, None, strength)
    )


def test_compiled_potential_refuses_scripting_and_other_committees():
    compiled = CompiledCommitteePotential(CommitteePotential(small_committee()))
    with pytest.raises(TypeError, match="eagerly only"):
        torch.jit.script(compiled)
    mlp = CoordinateMLPCommittee(n_atoms=3, species=[1, 8], n_members=3)
    with pytest.raises(ValueError, match="compile needs a SchNetCommittee.*CoordinateMLPCommittee"):
        CompiledCommitteePotential(CommitteePotential(mlp))
