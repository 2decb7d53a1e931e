"""Differentiable dihedral rotations: the collective-variable map s^-1(seed, delta) of paper Sec. II.C.

A dihedral ``(a, b, c, d)`` is changed by rotating one side of its central bond ``b-c``
about the bond axis. The side that moves is found from the bond graph: removing ``b-c``
splits the molecule in two, and the smaller fragment moves (a bond inside a ring does
not split the molecule and is refused). Several dihedrals compose sequentially: each
rotation uses the axis of the *current* coordinates, so later rotations see the earlier
ones. Everything is batched over seeds and differentiable in the angles.
"""

from __future__ import annotations

import collections
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["DihedralRotation", "dihedral_angles", "peptide_dihedrals"]


def dihedral_angles(positions: Tensor, quadruples: Tensor) -> Tensor:
    """Dihedral angles (IUPAC sign convention, as mdtraj), radians in (-pi, pi].

    Parameters
    ----------
    positions : Tensor, shape (S, N, 3) or (N, 3)
    quadruples : Tensor, shape (K, 4), int64

    Returns
    -------
    Tensor, shape (S, K) or (K,)
    """
    single = positions.dim() == 2
    if single:
        positions = positions.unsqueeze(0)
    p = positions[:, quadruples]  # (S, K, 4, 3)
    b0 = p[:, :, 1] - p[:, :, 0]
    b1 = p[:, :, 2] - p[:, :, 1]
    b2 = p[:, :, 3] - p[:, :, 2]
    n1 = torch.cross(b0, b1, dim=-1)
    n2 = torch.cross(b1, b2, dim=-1)
    m1 = torch.cross(n1, b1 / b1.norm(dim=-1, keepdim=True), dim=-1)
    x = (n1 * n2).sum(-1)
    y = (m1 * n2).sum(-1)
    angles = torch.atan2(-y, x)  # IUPAC sign (mdtraj): with b0 = p1 - p0 the m1 projection enters negated
    return angles[0] if single else angles


def _components(n_atoms: int, bonds: Sequence[Tuple[int, int]], cut: Tuple[int, int], start: int) -> set:
    graph: Dict[int, List[int]] = collections.defaultdict(list)
    for a, b in bonds:
        if {a, b} == set(cut):
            continue
        graph[a].append(b)
        graph[b].append(a)
    seen, queue = {start}, collections.deque([start])
    while queue:
        atom = queue.popleft()
        for other in graph[atom]:
            if other not in seen:
                seen.add(other)
                queue.append(other)
    return seen


class DihedralRotation:
    """Sets or shifts dihedral angles of a batch of structures, differentiably.

    Parameters
    ----------
    n_atoms : int
    bonds : sequence of (int, int)
        The molecule's bond graph (e.g. ``[(b[0].index, b[1].index) for b in topology.bonds()]``).
    dihedrals : sequence of (int, int, int, int)
        Atom indices of each dihedral; ``a-b``, ``b-c``, ``c-d`` must be bonds.

    Examples
    --------
    >>> rotation = DihedralRotation(len(numbers), bonds, peptide_dihedrals(topology))  # doctest: +SKIP
    >>> moved = rotation.apply(seeds, delta)  # seeds (S, N, 3), delta (S, K) radians  # doctest: +SKIP
    """

    def __init__(self, n_atoms: int, bonds: Sequence[Tuple[int, int]], dihedrals: Sequence[Sequence[int]]) -> None:
        bonds = [(int(a), int(b)) for a, b in bonds]
        bond_set = {frozenset(b) for b in bonds}
        if not dihedrals:
            raise ValueError("dihedrals is empty; give at least one (a, b, c, d) quadruple")
        masks, signs, quadruples = [], [], []
        for q in dihedrals:
            if len(q) != 4 or len(set(q)) != 4:
                raise ValueError(f"dihedral {tuple(q)!r} must name four distinct atoms")
            a, b, c, d = (int(i) for i in q)
            for u, v in ((a, b), (b, c), (c, d)):
                if frozenset((u, v)) not in bond_set:
                    raise ValueError(
                        f"dihedral {(a, b, c, d)}: atoms {u} and {v} are not bonded; dihedral atoms must be bonded in sequence"
                    )
            side_c = _components(n_atoms, bonds, (b, c), c)
            if b in side_c:
                raise ValueError(f"dihedral {(a, b, c, d)}: bond {b}-{c} lies in a ring, so no side of it can rotate freely")
            side_b = set(range(n_atoms)) - side_c
            moving, sign = (side_c, 1.0) if len(side_c) <= len(side_b) else (side_b, -1.0)
            mask = np.zeros(n_atoms)
            mask[sorted(moving)] = 1.0
            masks.append(mask)
            signs.append(sign)
            quadruples.append((a, b, c, d))
        self.n_atoms = int(n_atoms)
        self.masks = torch.tensor(np.array(masks))  # (K, N)
        self.signs = torch.tensor(signs)  # (K,)
        self.quadruples = torch.tensor(quadruples, dtype=torch.long)  # (K, 4)

    @property
    def n_dihedrals(self) -> int:
        return int(self.quadruples.shape[0])

    def apply(self, positions: Tensor, delta: Tensor) -> Tensor:
        """Rotate each dihedral ``k`` by ``delta[:, k]`` radians (sequentially, current axes).

        Parameters
        ----------
        positions : Tensor, shape (S, N, 3), unit Angstrom
        delta : Tensor, shape (S, K), unit rad

        Returns
        -------
        Tensor, shape (S, N, 3): the dihedral ``k`` of the result is the input's plus ``delta[:, k]``
        (modulo 2 pi) when the dihedrals do not share their central bond.
        """
        if positions.dim() != 3 or positions.shape[1] != self.n_atoms:
            raise ValueError(f"positions must have shape (S, {self.n_atoms}, 3), got {tuple(positions.shape)}")
        if delta.shape != (positions.shape[0], self.n_dihedrals):
            raise ValueError(f"delta must have shape ({positions.shape[0]}, {self.n_dihedrals}), got {tuple(delta.shape)}")
        masks = self.masks.to(positions)
        signs = self.signs.to(positions)
        x = positions
        for k in range(self.n_dihedrals):
            _, b, c, _ = self.quadruples[k].tolist()
            axis = x[:, c] - x[:, b]
            u = (axis / axis.norm(dim=-1, keepdim=True)).unsqueeze(1)  # (S, 1, 3)
            theta = (signs[k] * delta[:, k]).view(-1, 1, 1)
            v = x - x[:, c].unsqueeze(1)
            rotated = (
                v * torch.cos(theta)
                + torch.cross(u.expand_as(v), v, dim=-1) * torch.sin(theta)
                + u * (u * v).sum(-1, keepdim=True) * (1 - torch.cos(theta))
            )
            x = x + masks[k].view(1, -1, 1) * (rotated - v)
        return x


def peptide_dihedrals(topology, names: Sequence[str] = ("phi", "psi")) -> List[Tuple[int, int, int, int]]:
    """Backbone dihedrals of a peptide by name, found by mdtraj (``phi``, ``psi``, ``omega``)."""
    import mdtraj

    md_topology = topology if isinstance(topology, mdtraj.Topology) else mdtraj.Topology.from_openmm(topology)
    finders = {"phi": mdtraj.compute_phi, "psi": mdtraj.compute_psi, "omega": mdtraj.compute_omega}
    dummy = mdtraj.Trajectory(np.zeros((1, md_topology.n_atoms, 3)), md_topology)
    found: List[Tuple[int, int, int, int]] = []
    for name in names:
        if name not in finders:
            raise ValueError(f"unknown dihedral name {name!r}; choose from {sorted(finders)}")
        indices, _ = finders[name](dummy)
        if len(indices) == 0:
            raise ValueError(f"the topology has no {name} dihedral")
        found.extend(tuple(int(i) for i in q) for q in indices)
    return found
