"""GFN2-xTB (and GFN1-xTB) labels through tblite.

tblite's Python interface works in atomic units (bohr, hartree); the
conversion to Angstrom and eV uses :mod:`advmd.units` (CODATA 2018).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from advmd import units
from advmd.labelers.base import Labeler, LabelingError

__all__ = ["TBLiteLabeler"]

METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")


class TBLiteLabeler(Labeler):
    """Semi-empirical tight-binding labels (default GFN2-xTB).

    Parameters
    ----------
    method : {"GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"}
    charge : float
        Total charge (e).
    uhf : int
        Number of unpaired electrons.
    accuracy : float
        tblite's numerical accuracy parameter (lower is tighter).
    max_iterations : int
        SCC iterations before the structure is recorded as failed.

    Periodic structures (``atoms.pbc``) are computed with their cell (tblite's lattice).
    """

    name = "gfn2-xtb"
    elements = set(range(1, 87))
    periodic = True

    def __init__(
        self, method: str = "GFN2-xTB", charge: float = 0.0, uhf: int = 0, accuracy: float = 1.0, max_iterations: int = 250
    ) -> None:
        try:
            from tblite.interface import Calculator  # noqa: F401
        except ImportError as error:
            raise ImportError("the xTB labeler needs tblite: pip install tblite") from error
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.name = method.lower()
        self.charge = float(charge)
        self.uhf = int(uhf)
        self.accuracy = float(accuracy)
        self.max_iterations = int(max_iterations)

    def settings(self) -> Dict[str, Any]:
        import importlib.metadata

        return {
            "method": self.method,
            "charge": self.charge,
            "uhf": self.uhf,
            "accuracy": self.accuracy,
            "max_iterations": self.max_iterations,
            "tblite_version": importlib.metadata.version("tblite"),
        }

    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        from tblite.interface import Calculator

        positions_bohr = np.asarray(atoms.positions, dtype=np.float64) / units.BOHR_TO_ANGSTROM
        lattice, periodic = None, None
        if bool(np.any(atoms.pbc)):  # the cell's rows as lattice vectors, in Bohr
            lattice = np.asarray(atoms.cell.array, dtype=np.float64) / units.BOHR_TO_ANGSTROM
            periodic = np.asarray(atoms.pbc, dtype=bool)
        calc = Calculator(
            self.method,
            np.asarray(atoms.numbers),
            positions_bohr,
            charge=self.charge,
            uhf=self.uhf,
            lattice=lattice,
            periodic=periodic,
        )
        calc.set("verbosity", 0)
        calc.set("accuracy", self.accuracy)
        calc.set("max-iter", self.max_iterations)
        try:
            result = calc.singlepoint()
        except Exception as error:  # tblite raises TBLiteRuntimeError when the SCC does not converge
            raise LabelingError(f"{self.method} single point failed: {error}") from error
        energy_hartree = float(result.get("energy"))
        gradient = np.asarray(result.get("gradient"), dtype=np.float64)
        return energy_hartree * units.HARTREE_TO_EV, -gradient * units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
