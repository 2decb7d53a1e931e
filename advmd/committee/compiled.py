"""The committee's first-order evaluation compiled by ``torch.compile`` (Inductor), for MD in Python.

The TorchScript potential (what ``TorchForce``, LAMMPS and the default ``PythonForce``
run) executes one kernel per tensor operation: at a few hundred atoms and more a SchNet
member is memory traffic over ``(pairs, features)`` tensors, read and written again by
each gather, product, activation and scatter. Inductor fuses these chains into a few
generated loops (C++ with OpenMP on the CPU, Triton on a GPU). On a 2-core CPU a committee
evaluation took 0.93x the TorchScript time at 22 atoms, 0.76x at 648 and 0.71x at 3000
(``docs/benchmarks.md``).

Only what needs first derivatives is compiled: member energies and forces, the
statistics and a bias in ``sigma_E`` (UDD). A bias in ``sigma_F`` (HAL) needs second
derivatives, which Inductor does not compile; those evaluations run the eager
:class:`~advmd.committee.potential.CommitteePotential` code, with the compiled first pass
for large systems. Results equal the TorchScript potential's to float32 rounding: the
same operations, summed in another order.

The first call compiles (10-40 s on 2 cores; Inductor caches the generated code on disk,
so later processes start faster), and a C++ compiler must be installed. Shapes are
dynamic: a new number of pairs or atoms does not compile again.
"""

import copy
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor, nn

from advmd.committee.potential import CommitteePotential

__all__ = ["CompiledCommitteePotential", "eager_committee"]


def eager_committee(committee: nn.Module) -> nn.Module:
    """An eager copy of a (possibly scripted, possibly tabulated) :class:`SchNetCommittee`: same weights, same tables."""
    from advmd.committee.export import _CLASS_ATTRIBUTES, _attributes, exact_state_dict, model_dtype
    from advmd.committee.schnet import SchNetCommittee

    if isinstance(committee, SchNetCommittee):
        return copy.deepcopy(committee)
    name = getattr(committee, "original_name", type(committee).__name__)
    if name != "SchNetCommittee":
        raise ValueError(
            f"compile needs a SchNetCommittee (it compiles its member passes), got a {name}; run this model without compile"
        )
    hyper = _attributes(committee, _CLASS_ATTRIBUTES["SchNetCommittee"])
    device = next(iter(committee.buffers())).device
    eager = SchNetCommittee(**hyper).to(dtype=model_dtype(committee), device=device)
    eager.load_state_dict(exact_state_dict(committee))
    if bool(getattr(committee, "uses_tables", False)):  # files from before tabulation have no such attribute
        eager = eager.tabulated(float(committee.table_spacing))
    return eager.eval()


class CompiledCommitteePotential(CommitteePotential):
    """A :class:`CommitteePotential` whose first-order member passes run through ``torch.compile``.

    Parameters
    ----------
    potential : CommitteePotential
        Eager or scripted (e.g. loaded from an exported file); its committee must be a
        :class:`~advmd.committee.schnet.SchNetCommittee`. Its bias module is shared
        (a scripted bias is called as it is); the committee is copied into an eager module
        with the same weights (and tables, for a tabulated committee), frozen.

    Runs eagerly only: it cannot be scripted (export the potential it wraps).

    Examples
    --------
    >>> import torch
    >>> from advmd.committee import SchNetCommittee, CommitteePotential
    >>> from advmd.committee.compiled import CompiledCommitteePotential
    >>> potential = CommitteePotential(SchNetCommittee(species=[1, 8], n_members=3, n_features=16, n_rbf=8))
    >>> fast = CompiledCommitteePotential(potential)  # compiles at its first call
    """

    def __init__(self, potential: nn.Module) -> None:
        committee = eager_committee(potential.committee)
        for param in committee.parameters():
            param.requires_grad_(False)
        super().__init__(committee, potential.bias, pass_atoms=int(getattr(potential, "pass_atoms", 1024)))
        self.first_order_in_passes = True
        self.eval()
        # The committee's member-pass energies (SchNetCommittee.member_energies), compiled lazily at the first call.
        self._compiled_energies: Callable[..., Tensor] = torch.compile(self.committee.member_energies, dynamic=True)

    def __prepare_scriptable__(self) -> Any:
        raise TypeError(
            "a CompiledCommitteePotential runs eagerly only (torch.compile); script or export the CommitteePotential "
            "it was made from"
        )

    def _first_order_pass(
        self,
        member_positions: Tensor,
        atomic_numbers: Tensor,
        cell: Optional[Tensor],
        first: int,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]],
    ) -> Tuple[Tensor, Tensor]:
        """Energies (k,) and gradients (k, N, 3) of one pass's members: the compiled forward and its compiled backward."""
        energies = self._compiled_energies(member_positions, atomic_numbers, cell, first, pairs)
        gradient = torch.autograd.grad([energies.sum()], [member_positions])[0]
        return energies.detach(), gradient
