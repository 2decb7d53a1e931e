"""A committee of multilayer perceptrons on the Cartesian coordinates of a fixed set of atoms.

For model potentials that depend on absolute positions, such as the paper's 2D double well
(Eq. 15), where one particle moves on a surface. SchNet sees only interatomic distances, so it
cannot represent these. The input is the first ``dimensions`` coordinates of each of
``n_atoms`` atoms (``dimensions=2`` for (x, y) potentials); the output is one energy per
structure. Members have independent weights and are evaluated together with batched
products, like :class:`~advmd.committee.SchNetCommittee`. The interface is the same
(``atomic_energies``, ``species``, ``atomic_energy_shift``, ``energy_scale``), so training,
calibration, attacks and export work unchanged. Activation: tanh (smooth, so sigma_F^2
gradients exist). The model is not invariant to rotations or translations, by design.

Units: Angstrom in, eV out.
"""

import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["CoordinateMLPCommittee"]


class _MemberDense(nn.Module):
    def __init__(self, n_members: int, n_in: int, n_out: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (n_in + n_out))
        self.weight = nn.Parameter((torch.rand((n_members, n_in, n_out), generator=generator) * 2.0 - 1.0) * bound)
        self.bias = nn.Parameter(torch.zeros(n_members, 1, n_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class CoordinateMLPCommittee(nn.Module):
    """``M`` MLP energy models of the coordinates of ``n_atoms`` atoms.

    Parameters
    ----------
    n_atoms : int
    species : sequence of int
    n_members : int
    hidden : sequence of int
        Widths of the hidden layers.
    dimensions : int
        Coordinates used per atom: 3, or 2 (x, y) or 1 (x) for low-dimensional model potentials.
    seed : int
    """

    def __init__(
        self,
        n_atoms: int,
        species: Sequence[int],
        n_members: int = 5,
        hidden: Sequence[int] = (64, 64),
        dimensions: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        species = sorted({int(z) for z in species})
        if not species or species[0] < 1 or species[-1] > 118:
            raise ValueError(f"species must be atomic numbers in 1..118, got {species!r}")
        if int(n_atoms) != n_atoms or n_atoms < 1:
            raise ValueError(f"n_atoms must be a positive integer, got {n_atoms!r}")
        if int(n_members) != n_members or n_members < 1:
            raise ValueError(f"n_members must be a positive integer, got {n_members!r}")
        if dimensions not in (1, 2, 3):
            raise ValueError(f"dimensions must be 1, 2 or 3, got {dimensions!r}")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must list positive layer widths, got {hidden!r}")
        self.species: List[int] = species
        self.n_atoms = int(n_atoms)
        self.n_members = int(n_members)
        self.hidden: List[int] = hidden
        self.dimensions = int(dimensions)
        self.cutoff = 0.0  # not a local model: no cutoff
        lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_index", lookup)
        self.register_buffer("atomic_energy_shift", torch.zeros(len(species)))
        self.register_buffer("energy_scale", torch.ones(()))
        generator = torch.Generator().manual_seed(int(seed))
        widths = [self.n_atoms * self.dimensions] + hidden
        self.layers = nn.ModuleList(
            [_MemberDense(self.n_members, widths[k], widths[k + 1], generator) for k in range(len(hidden))]
        )
        self.output = _MemberDense(self.n_members, widths[-1], 1, generator)

    @torch.jit.unused
    def hyperparameters(self) -> dict:
        """Constructor arguments that rebuild this architecture (for metadata)."""
        return {
            "n_atoms": self.n_atoms,
            "species": list(self.species),
            "n_members": self.n_members,
            "hidden": list(self.hidden),
            "dimensions": self.dimensions,
        }

    @torch.jit.unused
    def member_axes(self) -> Dict[str, int]:
        """The member axis of every parameter (all lead with it): lets a trainer treat members separately."""
        return {name: 0 for name, _ in self.named_parameters()}

    def forward(self, member_positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor]) -> Tensor:
        """Energies of every member, shape (M,), for one structure (``member_positions`` (M, N, 3))."""
        return self.atomic_energies(member_positions, atomic_numbers, cell, None).sum(1)

    def atomic_energies(
        self, member_positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor], structure_index: Optional[Tensor]
    ) -> Tensor:
        """Per-atom energies (M, total atoms): each structure's energy shared equally by its atoms.

        Structures are consecutive blocks of ``n_atoms`` atoms (``structure_index`` is implied).
        """
        if cell is not None:
            raise ValueError("CoordinateMLPCommittee models open (non-periodic) systems only")
        m, total = member_positions.shape[0], member_positions.shape[1]
        if total % self.n_atoms != 0:
            raise ValueError(f"the model takes structures of {self.n_atoms} atoms; got {total} atoms in all")
        s = total // self.n_atoms
        x = member_positions[:, :, : self.dimensions].reshape(m, s, self.n_atoms * self.dimensions)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        energy = self.output(x) * self.energy_scale  # (M, S, 1)
        atomic = (energy / self.n_atoms).expand(m, s, self.n_atoms).reshape(m, total)
        return atomic + self.atomic_energy_shift[self.species_index[atomic_numbers]]
