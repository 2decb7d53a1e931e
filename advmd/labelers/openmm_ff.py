"""Reference labels from a classical force field evaluated by OpenMM (amber14 by default).

The one conversion of this labeler (nm, kJ/mol -> Angstrom, eV) uses :mod:`advmd.units`.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from advmd import units
from advmd.labelers.base import Labeler

__all__ = ["OpenMMLabeler"]


class OpenMMLabeler(Labeler):
    """Energies and forces of any OpenMM System, in eV and eV/Angstrom.

    Parameters
    ----------
    system : openmm.System
        Its particles must match the structures to label, in order.
    topology : openmm.app.Topology, optional
        When given, the elements of every structure are checked against it.
    platform : str
        OpenMM platform name (``"Reference"`` is exact double precision).
    name : str
        Provenance name (e.g. ``"amber14"``).

    Examples
    --------
    >>> from advmd.systems import alanine_dipeptide, amber14_vacuum_system  # doctest: +SKIP
    >>> topology, _ = alanine_dipeptide()  # doctest: +SKIP
    >>> labeler = OpenMMLabeler(amber14_vacuum_system(topology), topology, name="amber14")  # doctest: +SKIP
    """

    def __init__(self, system: Any, topology: Any = None, platform: str = "Reference", name: str = "openmm") -> None:
        import openmm

        self.system = system
        self.name = name
        self.n_atoms = system.getNumParticles()
        self.platform = platform
        self.expected_numbers: Optional[np.ndarray] = None
        if topology is not None:
            if topology.getNumAtoms() != self.n_atoms:
                raise ValueError(f"topology has {topology.getNumAtoms()} atoms but the System has {self.n_atoms} particles")
            self.expected_numbers = np.array([a.element.atomic_number for a in topology.atoms()])
            self.elements = set(int(z) for z in self.expected_numbers)
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))

    def settings(self) -> Dict[str, Any]:
        forces = [f.__class__.__name__ for f in self.system.getForces()]
        return {"engine": "openmm", "platform": self.platform, "n_particles": self.n_atoms, "forces": forces}

    def check(self, structures) -> None:
        super().check(structures)
        for k, atoms in enumerate(structures):
            if len(atoms) != self.n_atoms:
                raise ValueError(f"structure {k} has {len(atoms)} atoms but the OpenMM System has {self.n_atoms} particles")
            if self.expected_numbers is not None and not np.array_equal(atoms.numbers, self.expected_numbers):
                raise ValueError(f"structure {k}: atom order or elements differ from the labeler's topology")

    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        energies, forces = self.label_positions(atoms.positions[None])
        return float(energies[0]), forces[0]

    def label_positions(self, positions_angstrom: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Label coordinate frames directly (no failure bookkeeping; for bulk classical labels).

        Parameters
        ----------
        positions_angstrom : ndarray, shape (S, N, 3), unit Angstrom

        Returns
        -------
        energies : ndarray, shape (S,), unit eV
        forces : ndarray, shape (S, N, 3), unit eV/Angstrom
        """
        from openmm import unit

        positions = np.asarray(positions_angstrom, dtype=np.float64)
        if positions.ndim == 2:
            positions = positions[None]
        if positions.ndim != 3 or positions.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape (S, {self.n_atoms}, 3) in Angstrom, got {positions.shape}")
        energies = np.empty(len(positions))
        forces = np.empty_like(positions)
        for k, frame in enumerate(positions):
            self.context.setPositions(frame * units.ANGSTROM_TO_NM)
            state = self.context.getState(energy=True, forces=True)
            energies[k] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * units.KJ_PER_MOL_TO_EV
            kj_nm = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            forces[k] = kj_nm / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
        return energies, forces
