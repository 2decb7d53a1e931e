"""Initial data of the paper's three systems.

* Alanine dipeptide in vacuum: classical Langevin MD at 300 K (paper: 2 ns,
  a snapshot every 2 ps, 2 fs steps with hydrogen bonds constrained; amber14
  here in place of OPLS), labelled without constraints.
* Ammonia: geometry relaxed with the chosen labeler, then random displacements
  along its normal modes at temperatures drawn from 250-750 K (paper: 78 geometries).
* 2D double well: uniform samples in [-1.5, 1.5]^2 kept when E < -2 (one basin only).

All take a seed and are reproducible.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import numpy as np

from advmd import units
from advmd.labelers.analytic import double_well_2d
from advmd.labelers.base import Labeler

logger = logging.getLogger(__name__)

__all__ = [
    "initial_structures",
    "LabelerCalculator",
    "alanine_md_structures",
    "ammonia_ground_state",
    "normal_mode_displacements",
    "numerical_hessian",
    "double_well_structures",
]


def _ase_calculator_base() -> Any:
    from ase.calculators.calculator import Calculator

    return Calculator


class LabelerCalculator(_ase_calculator_base()):  # type: ignore[misc]
    """An ASE calculator backed by any advmd :class:`~advmd.labelers.base.Labeler` (eV, eV/Angstrom)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, labeler: Labeler) -> None:
        super().__init__()
        self.labeler = labeler

    def calculate(self, atoms: Any = None, properties: Any = ("energy",), system_changes: Any = None) -> None:
        from ase.calculators.calculator import all_changes

        super().calculate(atoms, properties, system_changes or all_changes)
        result = self.labeler.label([self.atoms])
        if result.failures:
            raise RuntimeError(f"labeler {self.labeler.name!r} failed: {result.failures[0]}")
        self.results = {"energy": float(result.energies[0]), "forces": result.forces[0]}


def alanine_md_structures(
    n_frames: int = 100,
    interval_ps: float = 2.0,
    temperature_k: float = 300.0,
    timestep_fs: float = 2.0,
    constrain_hydrogen_bonds: bool = True,
    seed: int = 0,
) -> List[Any]:
    """Snapshots of alanine dipeptide from amber14 Langevin MD (paper: 1000 frames every 2 ps).

    Returns
    -------
    list of ase.Atoms (Angstrom)
    """
    from ase import Atoms
    from openmm import app

    from advmd.md.sampling import langevin_frames
    from advmd.systems import alanine_dipeptide, amber14_vacuum_system

    topology, positions = alanine_dipeptide()
    system = amber14_vacuum_system(topology, constraints=app.HBonds if constrain_hydrogen_bonds else None)
    steps = int(round(interval_ps * 1000.0 / timestep_fs))
    frames = langevin_frames(system, positions, n_frames, steps, temperature_k=temperature_k, timestep_fs=timestep_fs, seed=seed)
    numbers = [a.element.atomic_number for a in topology.atoms()]
    return [Atoms(numbers=numbers, positions=frame) for frame in frames]


def ammonia_ground_state(labeler: Labeler, fmax: float = 1e-3, steps: int = 200) -> Any:
    """Ammonia relaxed with ``labeler`` (BFGS until the largest force is below ``fmax`` eV/Angstrom)."""
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule("NH3")
    atoms.calc = LabelerCalculator(labeler)
    converged = BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    if not converged:
        raise RuntimeError(f"ammonia relaxation with {labeler.name!r} did not reach fmax={fmax} eV/A in {steps} steps")
    relaxed = atoms.copy()
    relaxed.calc = None
    return relaxed


def numerical_hessian(atoms: Any, labeler: Labeler, step: float = 5e-3) -> np.ndarray:
    """Hessian (3N x 3N, eV/Angstrom^2) by central differences of the labeler's forces."""
    n = len(atoms)
    displaced = []
    for k in range(3 * n):
        for sign in (1.0, -1.0):
            work = atoms.copy()
            work.positions[k // 3, k % 3] += sign * step
            displaced.append(work)
    result = labeler.label(displaced)
    if result.failures:
        raise RuntimeError(f"Hessian displacement failed: {next(iter(result.failures.values()))}")
    hessian = np.empty((3 * n, 3 * n))
    for k in range(3 * n):
        plus, minus = result.forces[2 * k].reshape(-1), result.forces[2 * k + 1].reshape(-1)
        hessian[k] = -(plus - minus) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def normal_mode_displacements(
    atoms: Any,
    hessian: np.ndarray,
    n_structures: int,
    temperature_range_k: Tuple[float, float] = (250.0, 750.0),
    seed: int = 0,
) -> List[Any]:
    """Random displacements along normal modes, thermal amplitudes (classical harmonic oscillator).

    Each structure draws a temperature uniformly from ``temperature_range_k`` and,
    for every vibrational mode ``k`` with mass-weighted frequency ``w_k``, a
    normal coordinate ``q_k ~ N(0, kT / w_k^2)``; the Cartesian displacement is
    ``M^{-1/2} sum_k q_k e_k``. Translations and rotations (the six smallest
    eigenvalues, five for linear molecules) are left out.
    """
    masses = np.repeat(atoms.get_masses(), 3)  # amu
    inv_sqrt_m = 1.0 / np.sqrt(masses)
    mass_weighted = hessian * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh(mass_weighted)
    # An eigenvector's sign is arbitrary and LAPACK flips it on input changes of 1e-16 (two relaxations of
    # the same molecule), which moved seeded structures by 0.1 A. Fix it: largest component positive.
    largest = np.argmax(np.abs(eigenvectors), axis=0)
    eigenvectors = eigenvectors * np.sign(eigenvectors[largest, np.arange(eigenvectors.shape[1])])
    n_external = 5 if _is_linear(atoms) else 6
    order = np.argsort(np.abs(eigenvalues))
    vibrational = np.sort(order[n_external:])
    if np.any(eigenvalues[vibrational] <= 0):
        raise ValueError("the Hessian has negative vibrational eigenvalues: relax the structure to a minimum first")
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(n_structures):
        kt = units.BOLTZMANN_EV_PER_K * rng.uniform(*temperature_range_k)
        q = rng.normal(size=len(vibrational)) * np.sqrt(kt / eigenvalues[vibrational])
        displacement = (eigenvectors[:, vibrational] @ q) * inv_sqrt_m
        work = atoms.copy()
        work.positions = atoms.positions + displacement.reshape(-1, 3)
        structures.append(work)
    return structures


def _is_linear(atoms: Any) -> bool:
    if len(atoms) < 3:
        return True
    centred = atoms.positions - atoms.positions.mean(0)
    return np.linalg.matrix_rank(centred, tol=1e-3) < 2


def double_well_structures(n_candidates: int = 800, energy_cut: float = -2.0, seed: int = 0, box: float = 1.5) -> List[Any]:
    """The paper's initial double-well data: uniform (x, y) in [-box, box]^2 kept when E < ``energy_cut``.

    Returns
    -------
    list of ase.Atoms
        One particle each, at (x, y, 0).
    """
    from ase import Atoms

    rng = np.random.default_rng(seed)
    xy = rng.uniform(-box, box, size=(int(n_candidates), 2))
    energy, _ = double_well_2d(xy)
    kept = xy[energy < energy_cut]
    if len(kept) == 0:
        raise ValueError(
            f"none of the {n_candidates} candidates lies below E={energy_cut} (about one in ten does): "
            "draw more (--n, [system] initial)"
        )
    return [Atoms("H", positions=[[x, y, 0.0]]) for x, y in kept]


def initial_structures(system: str, n: int, seed: int = 0, **options: Any) -> Tuple[List[Any], Dict[str, Any]]:
    """Initial structures of a paper system and the settings that made them.

    ``alanine``: amber14 MD frames (option ``interval_ps``, default 2); ``ammonia``: normal-mode
    displacements around the ground state of a labeler (options ``labeler``, default ``xtb``, and
    ``labeler_options``, its settings: the geometry and Hessian use the method the labels use);
    ``double-well``: the paper's low-energy uniform samples (``n`` candidates).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"the number of initial structures must be >= 1, got {n!r}")
    settings: Dict[str, Any] = {"system": system, "n": int(n), "seed": int(seed)}
    if system == "alanine":
        interval = float(options.get("interval_ps", 2.0))
        structures = alanine_md_structures(n_frames=int(n), interval_ps=interval, seed=int(seed))
        settings.update(interval_ps=interval, temperature_k=300.0, force_field="amber14", constraints="HBonds")
    elif system == "ammonia":
        from advmd.labelers import make_labeler

        labeler = make_labeler(options.get("labeler", "xtb"), **dict(options.get("labeler_options", {})))
        ground = ammonia_ground_state(labeler)
        hessian = numerical_hessian(ground, labeler)
        structures = normal_mode_displacements(ground, hessian, int(n), (250.0, 750.0), seed=int(seed))
        settings.update(labeler=labeler.name, labeler_settings=labeler.settings(), temperature_range_k=[250.0, 750.0])
    elif system == "double-well":
        structures = double_well_structures(int(n), seed=int(seed))
        settings.update(energy_cut=-2.0, box=1.5)
    else:
        raise ValueError(f"unknown system {system!r}; choose alanine, ammonia or double-well")
    return structures, settings
