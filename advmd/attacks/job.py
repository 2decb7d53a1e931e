"""One exploration step on a dataset: seeds from its labelled rows, attack or random displacement, selection, pending rows.

This is what ``advmd attack`` runs and what the active-learning loop calls for
its attack and random sources. Selected structures are added to the dataset as
pending rows (label them with ``advmd label``) with provenance: source
(``attack-cartesian``, ``attack-dihedral`` or ``random``), the seed's row id as
``parent_id``, sigma_F^2 as ``uncertainty``, and the settings in ``selection``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from advmd.attacks.attack import AttackConfig, attack, log_partition_function, random_displacements
from advmd.attacks.dihedral import DihedralRotation, peptide_dihedrals
from advmd.attacks.selection import SelectionConfig, select

__all__ = [
    "Candidates",
    "ExplorationConfig",
    "add_candidates",
    "candidate_rows",
    "explore_dataset",
    "generate_candidates",
    "molecule_graph",
    "parse_dihedrals",
    "seed_pool",
]

logger = logging.getLogger(__name__)


@dataclass
class ExplorationConfig:
    """Settings of :func:`explore_dataset`.

    Attributes
    ----------
    method : "attack" or "random"
    space : "cartesian" or "dihedral"
    dihedrals : list
        For the dihedral space: names (``phi``, ``psi``, ``omega``; need a peptide topology) or
        atom-index quadruples.
    n_seeds : int
        Seeds drawn from the labelled rows (without replacement while there are enough).
    attack : AttackConfig
        Adam settings; ``attack.kt`` (eV) selects Eq. 13 with ``log Q`` from the seeds' pool.
    amplitude : float
        Random method: half-width of the uniform ``delta`` (Angstrom or rad).
    selection : SelectionConfig
        ``threshold=None`` takes the committee's calibrated Eq. 8 threshold.
    energy_cap : float or None, unit eV
        Drop candidates predicted more than this above the lowest labelled energy.
    seed : int
    """

    method: str = "attack"
    space: str = "dihedral"
    dihedrals: List[Any] = field(default_factory=lambda: ["phi", "psi"])
    n_seeds: int = 50
    attack: AttackConfig = field(default_factory=AttackConfig)
    amplitude: float = math.pi
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    energy_cap: Optional[float] = 2.0
    seed: int = 0

    def validate(self) -> None:
        if self.method not in ("attack", "random"):
            raise ValueError(f"exploration method must be 'attack' or 'random', got {self.method!r}")
        if self.space not in ("cartesian", "dihedral"):
            raise ValueError(f"exploration space must be 'cartesian' or 'dihedral', got {self.space!r}")
        if int(self.n_seeds) != self.n_seeds or self.n_seeds < 1:
            raise ValueError(f"n_seeds must be a positive integer, got {self.n_seeds!r}")
        if self.energy_cap is not None and not (math.isfinite(self.energy_cap) and self.energy_cap > 0):
            raise ValueError(f"energy_cap must be > 0 eV above the lowest labelled energy (or None), got {self.energy_cap!r}")
        self.attack.validate()
        self.selection.validate()
        if self.space == "dihedral" and self.method == "attack" and self.attack.max_norm is not None:
            raise ValueError(
                f"max_norm ({self.attack.max_norm}) bounds Cartesian displacements in Angstrom; a dihedral attack moves "
                "angles: leave max_norm unset, or attack in Cartesian space"
            )

    @property
    def source(self) -> str:
        return "random" if self.method == "random" else f"attack-{self.space}"

    def settings(self) -> Dict[str, Any]:
        """JSON-serialisable record of the settings (stored with every selected row)."""
        record = asdict(self)
        record["dihedrals"] = [d if isinstance(d, str) else [int(i) for i in d] for d in self.dihedrals]
        return record


def parse_dihedrals(text: str) -> List[Any]:
    """``"phi,psi"`` or ``"4-6-8-14,6-8-14-16"`` (atom indices, 0-based) into a dihedral list."""
    items: List[Any] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "-" in part:
            try:
                quadruple = tuple(int(i) for i in part.split("-"))
            except ValueError:
                raise ValueError(f"dihedral {part!r}: atom indices must be integers like 4-6-8-14") from None
            if len(quadruple) != 4:
                raise ValueError(f"dihedral {part!r} must name four atoms, like 4-6-8-14")
            items.append(quadruple)
        else:
            items.append(part)
    if not items:
        raise ValueError(f"no dihedrals in {text!r}; give names (phi,psi) or atom quadruples (4-6-8-14)")
    return items


def molecule_graph(numbers: Sequence[int], positions: np.ndarray, topology_file: Optional[Union[str, Path]] = None):
    """Bonds and an OpenMM topology (or ``None``) for a molecule.

    With ``topology_file`` (PDB) its bonds are used; a molecule with the shipped
    alanine dipeptide's composition uses that PDB; otherwise bonds come from covalent
    radii (ASE's natural cutoffs) on ``positions`` (Angstrom).
    """
    from openmm import app

    from advmd.systems import resource_path

    numbers = [int(z) for z in numbers]
    candidates = [Path(topology_file)] if topology_file else [resource_path("alanine-dipeptide.pdb")]
    for path in candidates:
        if not path.is_file():
            raise FileNotFoundError(f"topology file {str(path)!r} does not exist")
        topology = app.PDBFile(str(path)).topology
        if [a.element.atomic_number for a in topology.atoms()] == numbers:
            return [(b[0].index, b[1].index) for b in topology.bonds()], topology
        if topology_file:
            raise ValueError(f"topology file {str(path)!r} does not match the dataset's atoms (element order differs)")
    from ase import Atoms
    from ase.neighborlist import NeighborList, natural_cutoffs

    atoms = Atoms(numbers=numbers, positions=positions)
    neighbors = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=False)
    neighbors.update(atoms)
    bonds = [(i, int(j)) for i in range(len(atoms)) for j in neighbors.get_neighbors(i)[0]]
    return bonds, None


def seed_pool(dataset, numbers: Optional[Sequence[int]] = None) -> Tuple[List[int], np.ndarray, np.ndarray, np.ndarray]:
    """Labelled rows of one composition: ids, numbers, positions (S, N, 3), energies (S,)."""
    rows = [row for row in dataset.rows(label_status="done") if not np.any(row.pbc)]
    if not rows:
        raise ValueError("the dataset has no labelled (non-periodic) rows to start from; label some first ('advmd label')")
    if numbers is None:
        compositions: Dict[Tuple[int, ...], int] = {}
        for row in rows:
            compositions[tuple(row.numbers)] = compositions.get(tuple(row.numbers), 0) + 1
        numbers = max(compositions, key=compositions.get)
    key = tuple(int(z) for z in numbers)
    rows = [row for row in rows if tuple(row.numbers) == key]
    if not rows:
        raise ValueError("no labelled row has the requested composition")
    return (
        [row.id for row in rows],
        np.array(key),
        np.array([row.positions for row in rows]),
        np.array([row.energy for row in rows]),
    )


def training_energies(
    pool_ids: Sequence[int], pool_energies: np.ndarray, training_ids: Optional[Sequence[int]]
) -> Optional[np.ndarray]:
    """Energies of the pool rows that are training rows (for Q of Eq. 11-12); ``None`` when there are none."""
    if not training_ids:
        return None
    wanted = np.isin(np.asarray(pool_ids), np.asarray(list(training_ids), dtype=int))
    if not wanted.any():
        logger.warning("none of the committee's training rows is in this dataset: Q from every labelled row")
        return None
    return np.asarray(pool_energies)[wanted]


@dataclass
class Candidates:
    """Explored structures before selection (numpy; Angstrom, eV, (eV/Angstrom)^2)."""

    source: str
    numbers: np.ndarray  # (N,)
    positions: np.ndarray  # (S, N, 3)
    mean_energy: np.ndarray  # (S,)
    sigma_f2: np.ndarray  # (S,)
    initial_sigma_f2: np.ndarray  # (S,)
    parent_ids: np.ndarray  # (S,) dataset row of each seed


def generate_candidates(
    committee,
    numbers: Sequence[int],
    pool: np.ndarray,
    pool_ids: Sequence[int],
    pool_energies: np.ndarray,
    config: ExplorationConfig,
    topology_file: Optional[Union[str, Path]] = None,
    partition_energies: Optional[np.ndarray] = None,
) -> Candidates:
    """Draw ``config.n_seeds`` seeds from ``pool`` (S, N, 3) and attack or displace them.

    ``partition_energies`` (eV): the energies the Boltzmann factor's partition function Q is built from
    (paper Eq. 11-12: the committee's training split); ``None`` uses ``pool_energies``. Q only shifts
    the Eq. 13 objective by a constant: the attacked geometries do not depend on it, its reported
    values do.
    """
    config.validate()
    rng = np.random.default_rng(int(config.seed))
    pick = rng.choice(len(pool), size=int(config.n_seeds), replace=int(config.n_seeds) > len(pool))
    seeds = pool[pick]
    if config.space == "dihedral":
        bonds, topology = molecule_graph(numbers, pool[0], topology_file)
        quadruples: List[Tuple[int, ...]] = []
        for item in config.dihedrals:
            if isinstance(item, str):
                if topology is None:
                    raise ValueError(
                        f"dihedral name {item!r} needs a peptide topology: pass a PDB file, or give atom indices (4-6-8-14)"
                    )
                quadruples.extend(peptide_dihedrals(topology, [item]))
            else:
                quadruples.append(tuple(int(i) for i in item))
        variables: Union[str, DihedralRotation] = DihedralRotation(len(numbers), bonds, quadruples)
    else:
        variables = "cartesian"
    attack_config = config.attack
    if config.method == "attack":
        if attack_config.kt is not None:
            log_q = log_partition_function(pool_energies if partition_energies is None else partition_energies, attack_config.kt)
            attack_config = AttackConfig(**{**asdict(attack_config), "log_partition": log_q})
        result = attack(committee, numbers, seeds, variables, attack_config)
    else:
        result = random_displacements(committee, numbers, seeds, variables, config.amplitude, config.seed)
    return Candidates(
        source=config.source,
        numbers=np.asarray(numbers, dtype=int),
        positions=np.asarray(result.positions, dtype=np.float64),
        mean_energy=np.asarray(result.mean_energy, dtype=np.float64),
        sigma_f2=np.asarray(result.sigma_f2, dtype=np.float64),
        initial_sigma_f2=np.asarray(result.initial_sigma_f2, dtype=np.float64),
        parent_ids=np.asarray(pool_ids)[pick],
    )


def candidate_rows(
    candidates: Candidates, indices: Sequence[int], generation: int, settings: Dict[str, Any]
) -> Tuple[List, List]:
    """The chosen candidates as ``ase.Atoms`` and :class:`~advmd.data.Provenance` records, ready for ``Dataset.add``."""
    from ase import Atoms

    from advmd.data import Provenance

    structures, provenance = [], []
    for k in indices:
        structures.append(Atoms(numbers=candidates.numbers, positions=candidates.positions[k]))
        provenance.append(
            Provenance(
                source=candidates.source,
                generation=int(generation),
                parent_id=int(candidates.parent_ids[k]),
                uncertainty=float(candidates.sigma_f2[k]),
                selection={
                    **settings,
                    "candidate": int(k),
                    "predicted_energy": float(candidates.mean_energy[k]),
                    "initial_sigma_f2": float(candidates.initial_sigma_f2[k]),
                },
            )
        )
    return structures, provenance


def add_candidates(
    dataset, candidates: Candidates, indices: Sequence[int], generation: int, settings: Dict[str, Any]
) -> List[int]:
    """Add the chosen candidates as pending rows (one transaction) with provenance; returns their ids."""
    structures, provenance = candidate_rows(candidates, indices, generation, settings)
    return dataset.add(structures, provenance) if structures else []


def _finite_stat(function: Any, values: np.ndarray) -> Optional[float]:
    """``function`` of the finite values (``None`` when none is: JSON's null, not NaN)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(function(finite)) if len(finite) else None


def explore_dataset(
    committee,
    dataset,
    config: ExplorationConfig,
    threshold: Optional[float] = None,
    generation: int = 0,
    topology_file: Optional[Union[str, Path]] = None,
    dry_run: bool = False,
    training_ids: Optional[Sequence[int]] = None,
) -> Dict[str, Any]:
    """Attack (or randomly displace) seeds from ``dataset``, select, and add the selection as pending rows.

    Parameters
    ----------
    committee : SchNetCommittee or CoordinateMLPCommittee
    dataset : advmd.data.Dataset
    config : ExplorationConfig
    threshold : float, optional
        Eq. 8 threshold, (eV/Angstrom)^2; overridden by ``config.selection.threshold`` when that is set.
    generation : int
        Written into the provenance of the new rows.
    dry_run : bool
        Select but write nothing.
    training_ids : sequence of int, optional
        Rows the committee was trained on (its metadata's ``training_ids``): Q of Eq. 11-12 comes from
        their energies. ``None``, or none of them in ``dataset``: from every labelled row of the composition.

    Returns
    -------
    dict
        ``ids`` of the new rows, selection counts, uncertainty and energy statistics, settings.
    """
    config.validate()
    ids, numbers, pool, energies = seed_pool(dataset)
    partition = training_energies(ids, energies, training_ids)
    result = generate_candidates(committee, numbers, pool, ids, energies, config, topology_file, partition)
    selection_config = config.selection
    if selection_config.threshold is None and threshold is not None:
        selection_config = SelectionConfig(**{**asdict(selection_config), "threshold": float(threshold)})
    energy_max = None if config.energy_cap is None else float(np.min(energies)) + float(config.energy_cap)
    selection_config = SelectionConfig(**{**asdict(selection_config), "energy_max": energy_max})
    chosen = select(result.positions, numbers, result.sigma_f2, result.mean_energy, selection_config, reference=pool)

    settings = config.settings()
    settings["threshold"] = selection_config.threshold
    settings["energy_max"] = energy_max
    new_ids = [] if dry_run else add_candidates(dataset, result, chosen.indices, generation, settings)
    summary = {
        "source": config.source,
        "ids": new_ids,
        "counts": chosen.counts,
        # Over the seeds that stayed finite: a frozen seed (non-finite objective) is reported with NaN and counted.
        "sigma_f2": {
            "initial_median": _finite_stat(np.median, result.initial_sigma_f2),
            "final_median": _finite_stat(np.median, result.sigma_f2),
            "final_max": _finite_stat(np.max, result.sigma_f2),
            "non_finite_seeds": int(np.sum(~np.isfinite(result.sigma_f2))),
        },
        "predicted_energy_above_min": {
            "median": _finite_stat(np.median, np.asarray(result.mean_energy) - np.min(energies)),
            "max": _finite_stat(np.max, np.asarray(result.mean_energy) - np.min(energies)),
        },
        "settings": settings,
    }
    logger.info("%s: %s", config.source, chosen.counts)
    return summary
