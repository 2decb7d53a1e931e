"""Reference labels from a classical force field evaluated by OpenMM.

The one conversion of this labeler (nm, kJ/mol -> Angstrom, eV) uses
:mod:`advmd.units`.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from advmd import units

__all__ = ["OpenMMLabeler"]


class OpenMMLabeler:
    """Energies and forces of any OpenMM System, in eV and eV/Angstrom.

    Parameters
    ----------
    system : openmm.System
        Its particles must match the structures to label, in order.
    platform : str
        OpenMM platform name (``"Reference"`` is exact double precision).

    Examples
    --------
    >>> from advmd.systems import alanine_dipeptide, amber14_vacuum_system  # doctest: +SKIP
    >>> topology, positions = alanine_dipeptide()  # doctest: +SKIP
    >>> labeler = OpenMMLabeler(amber14_vacuum_system(topology))  # doctest: +SKIP
    """

    def __init__(self, system: Any, platform: str = "Reference") -> None:
        import openmm

        self.system = system
        self.n_atoms = system.getNumParticles()
        integrator = openmm.VerletIntegrator(0.001)
        self.context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))

    def label(self, positions_angstrom: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Label structures.

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
            forces[k] = (
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
            )
        return energies, forces
