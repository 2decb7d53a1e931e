"""The labeler interface: a reference method that gives energies and forces of structures.

A labeler labels a batch of structures (``ase.Atoms``) and returns energies
(eV) and forces (eV/Angstrom). A structure that fails (an SCF that does not
converge, a crash of the backend) is recorded in ``failures`` and skipped;
it never aborts the batch.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Labeler", "LabelResult", "LabelingError"]


class LabelingError(RuntimeError):
    """A reference calculation failed for one structure (recorded, not fatal to a batch)."""


@dataclass
class LabelResult:
    """Labels of a batch.

    Attributes
    ----------
    energies : ndarray, shape (S,), unit eV
        NaN for failed structures.
    forces : list of ndarray, each (N_s, 3), unit eV/Angstrom
        ``None`` for failed structures.
    failures : dict
        Structure index -> error message.
    seconds : float
        Wall time of the batch.
    """

    energies: np.ndarray
    forces: List[Optional[np.ndarray]]
    failures: Dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def succeeded(self) -> List[int]:
        return [k for k in range(len(self.energies)) if k not in self.failures]


class Labeler(abc.ABC):
    """Base class of reference methods.

    Subclasses implement :meth:`_label_one` (one structure, eV and eV/Angstrom)
    and may restrict :attr:`elements` (atomic numbers they support; ``None``
    for any).
    """

    #: Short name recorded as provenance.
    name: str = "labeler"
    #: Atomic numbers this method supports (``None``: any).
    elements: Optional[Set[int]] = None
    #: Whether the method computes periodic structures (``atoms.pbc``) with their cell. A method that computes
    #: isolated molecules records periodic structures as failures rather than label them without their images.
    periodic: bool = False

    def settings(self) -> Dict[str, Any]:
        """JSON-serialisable settings recorded with every label."""
        return {}

    @abc.abstractmethod
    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        """Energy (eV) and forces (N, 3; eV/Angstrom) of one ``ase.Atoms``."""

    def check(self, structures: Sequence[Any]) -> None:
        """Raise ``ValueError`` naming the first structure with an unsupported element."""
        if self.elements is None:
            return
        for k, atoms in enumerate(structures):
            bad = sorted(set(int(z) for z in atoms.numbers) - set(self.elements))
            if bad:
                from ase.data import chemical_symbols

                names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in bad)
                raise ValueError(
                    f"structure {k} contains {names}, which labeler {self.name!r} does not support "
                    f"(supported Z: {sorted(self.elements)})"
                )

    def label(self, structures: Sequence[Any]) -> LabelResult:
        """Label a batch; failures are recorded per structure.

        Parameters
        ----------
        structures : sequence of ase.Atoms (positions in Angstrom)

        Returns
        -------
        LabelResult
        """
        structures = list(structures)
        self.check(structures)
        start = time.perf_counter()
        energies = np.full(len(structures), np.nan)
        forces: List[Optional[np.ndarray]] = [None] * len(structures)
        failures: Dict[int, str] = {}
        for k, atoms in enumerate(structures):
            if not np.all(np.isfinite(atoms.positions)):
                failures[k] = "positions contain NaN or infinite values"
                continue
            if not self.periodic and bool(np.any(atoms.pbc)):
                failures[k] = (
                    f"structure is periodic (pbc={atoms.pbc.tolist()}) but labeler {self.name!r} computes isolated "
                    "molecules; label it with a periodic method (xtb, or an ASE calculator) or store it without pbc"
                )
                logger.warning("labeler %s skipped structure %d: %s", self.name, k, failures[k])
                continue
            try:
                energy, force = self._label_one(atoms)
                force = np.asarray(force, dtype=np.float64).reshape(len(atoms), 3)
                if not (np.isfinite(energy) and np.all(np.isfinite(force))):
                    raise LabelingError("the reference method returned non-finite energy or forces")
            except Exception as error:  # recorded and skipped: one bad structure never aborts the batch
                failures[k] = f"{error.__class__.__name__}: {error}"
                logger.warning("labeler %s failed on structure %d: %s", self.name, k, failures[k])
                continue
            energies[k] = float(energy)
            forces[k] = force
        return LabelResult(energies, forces, failures, time.perf_counter() - start)
