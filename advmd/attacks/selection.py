"""Choosing which explored structures to label: uncertainty filter, energy cap, RMSD deduplication, budget.

The same selection serves attacks, random displacements and MD frames, so that
sources are compared at equal footing. Steps, in order:

1. drop non-finite candidates;
2. keep structures the committee does not know: ``sigma_F^2 >= t`` (paper Eq. 8,
   ``t`` from :func:`advmd.train.calibrate_threshold`);
3. drop structures whose committee mean energy exceeds a cap (the paper discards
   extreme energies: they are rarely visited and waste labels);
4. drop candidates within ``rmsd`` of a structure already in the dataset;
5. cluster the rest by aligned RMSD (Kabsch / QCP superposition through mdtraj;
   hierarchical clustering through scipy) and keep one representative per cluster,
   the one with the largest uncertainty;
6. keep at most ``max_count``, largest uncertainty first.

RMSD is between proper rotations (no reflection) and treats atoms as labelled
(no permutation of equivalent hydrogens); ``align=False`` measures it without
superposition, for models of absolute coordinates. Units: Angstrom, eV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["SelectionConfig", "Selection", "select", "pairwise_rmsd", "rmsd_to_set"]


def _trajectory(positions: np.ndarray, numbers: Sequence[int]):
    import mdtraj
    from mdtraj.core.element import Element

    topology = mdtraj.Topology()
    residue = topology.add_residue("MOL", topology.add_chain())
    for k, z in enumerate(numbers):
        element = Element.getByAtomicNumber(int(z))
        topology.add_atom(f"{element.symbol}{k}", element, residue)
    return mdtraj.Trajectory(np.asarray(positions, dtype=np.float64) / 10.0, topology)  # Angstrom -> nm


def _check(positions: np.ndarray, numbers: Sequence[int], name: str) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise ValueError(f"{name} must have shape (S, {len(numbers)}, 3) for {len(numbers)} atoms, got {positions.shape}")
    return positions


def _plain_rmsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    n = a.shape[1]
    return cdist(a.reshape(len(a), -1), b.reshape(len(b), -1)) / np.sqrt(n)


def pairwise_rmsd(positions: np.ndarray, numbers: Sequence[int], align: bool = True) -> np.ndarray:
    """RMSD between all pairs, shape (S, S), unit Angstrom; aligned (optimal superposition) unless ``align=False``."""
    import mdtraj

    positions = _check(positions, numbers, "positions")
    if not align:
        return _plain_rmsd(positions, positions)
    traj = _trajectory(positions, numbers)
    matrix = np.zeros((len(positions), len(positions)))
    for k in range(len(positions)):
        matrix[k] = mdtraj.rmsd(traj, traj, frame=k) * 10.0
    matrix = 0.5 * (matrix + matrix.T)  # float32 QCP is symmetric only to rounding
    np.fill_diagonal(matrix, 0.0)
    return matrix


def rmsd_to_set(candidates: np.ndarray, reference: np.ndarray, numbers: Sequence[int], align: bool = True) -> np.ndarray:
    """Smallest RMSD from each candidate to any reference structure, shape (S,), Angstrom (aligned unless ``align=False``)."""
    import mdtraj

    candidates = _check(candidates, numbers, "candidates")
    reference = _check(reference, numbers, "reference")
    if len(reference) == 0:
        return np.full(len(candidates), np.inf)
    if not align:
        return _plain_rmsd(candidates, reference).min(axis=1)
    ref_traj = _trajectory(reference, numbers)
    cand_traj = _trajectory(candidates, numbers)
    return np.array([float(np.min(mdtraj.rmsd(ref_traj, cand_traj, frame=k))) * 10.0 for k in range(len(candidates))])


@dataclass
class SelectionConfig:
    """Settings of :func:`select`.

    Attributes
    ----------
    threshold : float or None, unit (eV/Angstrom)^2
        Eq. 8: keep ``sigma_F^2 >= threshold`` (unknown to the committee); ``None`` keeps all.
    energy_max : float or None, unit eV
        Drop candidates whose committee mean energy is above this (absolute) value.
    rmsd : float, unit Angstrom
        Structures closer than this are duplicates; 0 switches deduplication off.
    linkage : str
        scipy hierarchical-clustering method; ``complete`` (default) guarantees every
        pair inside a cluster is closer than ``rmsd``.
    max_count : int or None
        Budget: keep at most this many (largest uncertainty first).
    align : bool
        Superpose before measuring RMSD (molecules). ``False`` for models of absolute
        coordinates (the double well), where a translated copy is a different structure.
    """

    threshold: Optional[float] = None
    energy_max: Optional[float] = None
    rmsd: float = 0.1
    linkage: str = "complete"
    max_count: Optional[int] = None
    align: bool = True

    def validate(self) -> None:
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError(f"SelectionConfig.threshold must be finite (or None), got {self.threshold!r}")
        if self.energy_max is not None and not np.isfinite(self.energy_max):
            raise ValueError(f"SelectionConfig.energy_max must be finite eV (or None), got {self.energy_max!r}")
        if not (np.isfinite(self.rmsd) and self.rmsd >= 0):
            raise ValueError(f"SelectionConfig.rmsd must be >= 0 Angstrom (0 = no deduplication), got {self.rmsd!r}")
        if self.linkage not in ("single", "complete", "average", "weighted"):
            raise ValueError(f"SelectionConfig.linkage must be single, complete, average or weighted, got {self.linkage!r}")
        if self.max_count is not None and (int(self.max_count) != self.max_count or self.max_count < 0):
            raise ValueError(f"SelectionConfig.max_count must be an integer >= 0 (or None), got {self.max_count!r}")


@dataclass
class Selection:
    """Indices of the kept candidates (largest uncertainty first) and what each step removed."""

    indices: np.ndarray
    counts: Dict[str, int] = field(default_factory=dict)
    clusters: Optional[np.ndarray] = None  # cluster label of every candidate that reached step 5 (-1 otherwise)

    def as_dict(self) -> Dict[str, object]:
        return {"kept": [int(i) for i in self.indices], "counts": dict(self.counts)}


def select(
    positions: np.ndarray,
    numbers: Sequence[int],
    uncertainty: np.ndarray,
    energy: Optional[np.ndarray] = None,
    config: Optional[SelectionConfig] = None,
    reference: Optional[np.ndarray] = None,
) -> Selection:
    """Select candidates to label (see the module docstring for the steps).

    Parameters
    ----------
    positions : ndarray, shape (S, N, 3), unit Angstrom
    numbers : sequence of int, length N
    uncertainty : ndarray, shape (S,)
        ``sigma_F^2`` (Eq. 7) of each candidate, (eV/Angstrom)^2.
    energy : ndarray, shape (S,), unit eV, optional
        Committee mean energy; needed with ``config.energy_max``.
    config : SelectionConfig
    reference : ndarray, shape (R, N, 3), optional
        Structures already in the dataset; candidates within ``config.rmsd`` of one are dropped.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    config = config or SelectionConfig()
    config.validate()
    positions = _check(positions, numbers, "positions")
    s = len(positions)
    uncertainty = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    if uncertainty.shape != (s,):
        raise ValueError(f"uncertainty must have shape ({s},), got {uncertainty.shape}")
    if config.energy_max is not None and energy is None:
        raise ValueError("SelectionConfig.energy_max is set but no energies were given")
    energy = None if energy is None else np.asarray(energy, dtype=np.float64).reshape(-1)
    if energy is not None and energy.shape != (s,):
        raise ValueError(f"energy must have shape ({s},), got {energy.shape}")

    counts: Dict[str, int] = {"candidates": s}
    finite = np.isfinite(uncertainty) & np.all(np.isfinite(positions), axis=(1, 2))
    if energy is not None:
        finite &= np.isfinite(energy)
    alive = np.flatnonzero(finite)
    counts["non_finite"] = s - len(alive)

    if config.threshold is not None:
        known = uncertainty[alive] < config.threshold  # Eq. 8: sigma^2 < t is in the training domain
        counts["below_threshold"] = int(known.sum())
        alive = alive[~known]
    if config.energy_max is not None:
        high = energy[alive] > config.energy_max
        counts["above_energy_cap"] = int(high.sum())
        alive = alive[~high]
    if config.rmsd > 0 and reference is not None and len(alive):
        near = rmsd_to_set(positions[alive], reference, numbers, config.align) < config.rmsd
        counts["near_dataset"] = int(near.sum())
        alive = alive[~near]

    clusters = np.full(s, -1)
    if config.rmsd > 0 and len(alive) > 1:
        distances = squareform(pairwise_rmsd(positions[alive], numbers, config.align), checks=False)
        labels = fcluster(linkage(distances, method=config.linkage), t=config.rmsd, criterion="distance")
        clusters[alive] = labels
        representatives: List[int] = []
        for label in np.unique(labels):
            members = alive[labels == label]
            representatives.append(int(members[np.argmax(uncertainty[members])]))
        counts["duplicates"] = len(alive) - len(representatives)
        alive = np.array(representatives, dtype=int)
    order = alive[np.argsort(-uncertainty[alive], kind="stable")]
    if config.max_count is not None and len(order) > config.max_count:
        counts["over_budget"] = len(order) - int(config.max_count)
        order = order[: int(config.max_count)]
    counts["selected"] = len(order)
    return Selection(indices=order, counts=counts, clusters=clusters)
