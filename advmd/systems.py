"""Molecular systems shipped with advmd (package data; nothing is downloaded).

``alanine-dipeptide.pdb`` is the vacuum solute of OpenMM's
``alanine-dipeptide-explicit.pdb`` test file (ACE-ALA-NME, 22 atoms).
:func:`water_box` generates periodic water-like boxes of any size (benchmarks).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Tuple

__all__ = ["resource_path", "alanine_dipeptide", "amber14_vacuum_system", "water_box"]


def resource_path(name: str) -> Path:
    """Path of a file shipped in ``advmd/resources``."""
    path = Path(str(importlib.resources.files("advmd") / "resources" / name))
    if not path.is_file():
        raise FileNotFoundError(f"advmd resource {name!r} is missing from {path.parent}; reinstall advmd")
    return path


def alanine_dipeptide() -> Tuple[Any, Any]:
    """Topology and positions (nm, with units) of alanine dipeptide in vacuum."""
    from openmm import app

    pdb = app.PDBFile(str(resource_path("alanine-dipeptide.pdb")))
    return pdb.topology, pdb.positions


def amber14_vacuum_system(topology: Any, constraints: Any = None) -> Any:
    """Amber14 (``amber14-all.xml``) System in vacuum, no cutoff, no constraints by default.

    Unconstrained, so its energies and forces label every degree of freedom
    an ML potential must learn.
    """
    from openmm import app

    forcefield = app.ForceField("amber14-all.xml")
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=constraints, rigidWater=False)


def water_box(n_molecules: int, seed: int = 0, volume_per_molecule: float = 29.9) -> Tuple[Any, Any, Any]:
    """A periodic cubic box of rigid water molecules on a lattice with random orientations.

    Liquid-water density by default (29.9 cubic Angstrom per molecule). O-H 0.9572 A,
    H-O-H 104.52 degrees (TIP3P geometry). Molecules sit on a simple cubic lattice of
    ``ceil(n ** (1/3))`` sites a side. For a perfect cube (8, 27, 216, 1000 molecules)
    no two atoms of different molecules come closer than about 1.5 A; other counts
    leave lattice sites empty at the same density, and pack closer (0.9-1.3 A measured
    for 2 to 1001 molecules). For benchmarks and tests of periodic systems (not an
    equilibrated liquid).

    Parameters
    ----------
    n_molecules : int
        Number of water molecules (``3 * n_molecules`` atoms).
    seed : int
        Seed of the orientations.
    volume_per_molecule : float, unit cubic Angstrom

    Returns
    -------
    topology : openmm.app.Topology
        With periodic box vectors and O-H bonds.
    positions : openmm.unit.Quantity, shape (3 n, 3), unit nm
    box : numpy.ndarray, shape (3, 3), unit Angstrom
        Box vectors as rows.
    """
    import math

    import numpy as np
    from openmm import Vec3, app, unit

    if int(n_molecules) != n_molecules or n_molecules < 1:
        raise ValueError(f"n_molecules must be a positive integer, got {n_molecules!r}")
    n = int(n_molecules)
    rng = np.random.default_rng(seed)
    side = (n * float(volume_per_molecule)) ** (1.0 / 3.0)
    per_axis = math.ceil(n ** (1.0 / 3.0) - 1e-9)
    spacing = side / per_axis
    angle = math.radians(104.52)
    molecule = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [0.9572 * math.cos(angle), 0.9572 * math.sin(angle), 0.0]])
    molecule -= molecule.mean(0)
    sites = np.array([(a, b, c) for c in range(per_axis) for b in range(per_axis) for a in range(per_axis)][:n], dtype=float)
    quaternions = rng.normal(size=(n, 4))
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    w, x, y, z = quaternions.T
    rotations = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )
    coordinates = np.einsum("nij,aj->nai", rotations, molecule) + ((sites + 0.5) * spacing)[:, None, :]
    topology = app.Topology()
    chain = topology.addChain()
    oxygen, hydrogen = app.Element.getBySymbol("O"), app.Element.getBySymbol("H")
    for _ in range(n):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", oxygen, residue)
        topology.addBond(o, topology.addAtom("H1", hydrogen, residue))
        topology.addBond(o, topology.addAtom("H2", hydrogen, residue))
    box = np.eye(3) * side
    topology.setPeriodicBoxVectors([Vec3(*row) for row in box / 10.0] * unit.nanometer)
    positions = unit.Quantity([Vec3(*row) for row in coordinates.reshape(-1, 3) / 10.0], unit.nanometer)
    return topology, positions, box
