"""Seeded Langevin sampling of snapshots from any OpenMM System."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from advmd import units

logger = logging.getLogger(__name__)

__all__ = ["langevin_frames"]


def langevin_frames(
    system: Any,
    positions: Any,
    n_frames: int,
    steps_between_frames: int,
    temperature_k: float = 300.0,
    timestep_fs: float = 1.0,
    friction_per_ps: float = 1.0,
    equilibration_steps: int = 1000,
    seed: int = 0,
    platform: str = "Reference",
) -> np.ndarray:
    """Snapshots of a Langevin (BAOAB, ``LangevinMiddleIntegrator``) trajectory.

    Parameters
    ----------
    system : openmm.System
    positions : positions with units, or ndarray (N, 3) in nm
    n_frames : int
    steps_between_frames : int
    temperature_k : float, unit K
    timestep_fs : float, unit fs
    friction_per_ps : float, unit 1/ps
    equilibration_steps : int
        Steps discarded before the first frame.
    seed : int
        Seeds the integrator's noise and the initial velocities (reproducible
        on the Reference and CPU platforms).
    platform : str

    Returns
    -------
    ndarray, shape (n_frames, N, 3), unit Angstrom
    """
    import openmm
    from openmm import unit

    for name, value in (("n_frames", n_frames), ("steps_between_frames", steps_between_frames)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_k * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(int(seed) + 1)  # OpenMM treats seed 0 as "choose one at random"
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, int(seed) + 1)
    integrator.step(int(equilibration_steps))
    frames = np.empty((int(n_frames), system.getNumParticles(), 3))
    for k in range(int(n_frames)):
        integrator.step(int(steps_between_frames))
        state = context.getState(positions=True)
        frames[k] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM
    return frames
