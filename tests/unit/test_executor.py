"""``use_simple_executor``: one fixed graph per model, native autograd, state restored."""

import io

import torch

from advmd.committee import CommitteePotential, SchNetCommittee, make_bias
from advmd.openmm import use_simple_executor


def _water_pair():
    positions = torch.tensor(
        [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0], [3.0, 0.1, 0.2], [3.9, 0.3, 0.1], [2.8, 1.0, 0.5]]
    )
    return positions, torch.tensor([8, 1, 1, 8, 1, 1])


def test_simple_executor_runs_one_graph_bit_for_bit_and_restores_the_previous_state():
    committee = SchNetCommittee(species=[1, 8], n_members=3, n_features=16, n_rbf=8, n_interactions=2, seed=3)
    positions, numbers = _water_pair()
    before = use_simple_executor(True)
    try:
        # A loaded file has functions of its own (as in ``advmd md``): a scripted class shares its
        # compiled methods with earlier scripts of the same class, which may have been optimised already.
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(CommitteePotential(committee, make_bias("hal", 3)).eval()), buffer)
        buffer.seek(0)
        scripted = torch.jit.load(buffer)
        strength = torch.tensor(0.05)
        outputs = [scripted(positions, numbers, None, strength) for _ in range(6)]
        # The profiling executor would re-optimise after the first calls; here every call runs the same graph.
        for out in outputs[1:]:
            torch.testing.assert_close(out["forces"], outputs[0]["forces"], atol=0, rtol=0)
            torch.testing.assert_close(out["energy"], outputs[0]["energy"], atol=0, rtol=0)
        # No autodiff subgraphs (the legacy executor's rewrite): gradients come from the operators' own formulas.
        graph = torch.jit.last_executed_optimized_graph()
        assert "prim::DifferentiableGraph" not in str(graph)
        # The sigma_F bias force (double backward) equals eager PyTorch's.
        eager = CommitteePotential(committee, make_bias("hal", 3)).eval()(positions, numbers, None, strength)
        torch.testing.assert_close(outputs[0]["forces"], eager["forces"], atol=1e-5, rtol=1e-5)
        assert use_simple_executor(True) is True
    finally:
        restored = use_simple_executor(before)
    assert restored is True
    assert use_simple_executor(before) is before
