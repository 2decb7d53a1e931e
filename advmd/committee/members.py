"""A committee made of independent, user-supplied TorchScript energy models.

Each member is any TorchScript module (for instance a third-party potential)
with the **member interface**::

    forward(positions: Tensor[N, 3] (Angstrom),
            atomic_numbers: Tensor[N] (int64),
            cell: Optional[Tensor[3, 3]] (Angstrom, box vectors as rows)) -> Tensor[] (eV)

The members are evaluated in turn inside one scripted call; each receives its
own copy of the coordinates so one backward pass yields every member's forces.
"""

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from advmd.errors import ModelFileError

__all__ = ["TorchScriptCommittee", "load_member"]


def load_member(path: Union[str, os.PathLike]) -> torch.jit.ScriptModule:
    """Load one TorchScript member model from a file, with an actionable error.

    Parameters
    ----------
    path : str or path-like
        A file written by ``torch.jit.save``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"member model file {str(path)!r} does not exist; give the path of a torch.jit.save file")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:  # torch raises RuntimeError/ValueError variants for corrupt archives
        raise ModelFileError(
            f"member model file {str(path)!r} is not a readable TorchScript archive ({error.__class__.__name__}); "
            "re-export it with torch.jit.save(torch.jit.script(model), path)"
        ) from error


class TorchScriptCommittee(nn.Module):
    """Committee of ``M`` independent energy models sharing the member interface.

    Parameters
    ----------
    members : sequence of modules or paths
        TorchScript modules (or files) implementing the member interface.
    species : sequence of int
        Atomic numbers every member supports; checked against topologies.
    cutoff : float, unit Angstrom, optional
        Largest interaction range of the members, used to check periodic boxes.
    """

    def __init__(
        self,
        members: Sequence[Union[nn.Module, str, os.PathLike]],
        species: Sequence[int],
        cutoff: Optional[float] = None,
    ) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("members must contain at least one model (statistics need two)")
        loaded: List[nn.Module] = []
        for member in members:
            if isinstance(member, (str, os.PathLike)):
                member = load_member(member)
            if not isinstance(member, torch.jit.ScriptModule):
                member = torch.jit.script(member)
            loaded.append(member)
        self.members = nn.ModuleList(loaded)
        self.species: List[int] = sorted({int(z) for z in species})
        if not self.species:
            raise ValueError("species must list the atomic numbers the members support")
        self.n_members = len(loaded)
        self.cutoff = float(cutoff) if cutoff is not None else 0.0

    def hyperparameters(self) -> dict:
        return {"species": list(self.species), "n_members": self.n_members, "cutoff": self.cutoff}

    def forward(self, member_positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor]) -> Tensor:
        """Energies of every member, shape (M,), unit eV (see :class:`SchNetCommittee`)."""
        energies: List[Tensor] = []
        k = 0
        for member in self.members:
            energies.append(member(member_positions[k], atomic_numbers, cell).reshape(()))
            k += 1
        return torch.stack(energies)


class SingleMember(nn.Module):
    """Adapts a one-member committee (``M == 1``) to the member interface.

    Used to export one member of a :class:`SchNetCommittee` as a stand-alone
    model, e.g. to check that a generic committee reproduces the batched one.
    """

    def __init__(self, committee: nn.Module) -> None:
        super().__init__()
        if int(getattr(committee, "n_members", 0)) != 1:
            raise ValueError("SingleMember wraps a committee with exactly one member")
        self.committee = committee

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor]) -> Tensor:
        return self.committee(positions.unsqueeze(0), atomic_numbers, cell)[0]
