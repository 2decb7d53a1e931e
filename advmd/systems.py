"""Molecular systems shipped with advmd (package data; nothing is downloaded).

``alanine-dipeptide.pdb`` is the vacuum solute of OpenMM's
``alanine-dipeptide-explicit.pdb`` test file (ACE-ALA-NME, 22 atoms).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Tuple

__all__ = ["resource_path", "alanine_dipeptide", "amber14_vacuum_system"]


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
