"""Reaction barriers by the nudged elastic band (ASE's NEB and FIRE), for committees and labelers.

The paper's ammonia test compares the nitrogen-inversion barrier of each committee
generation with the reference method's (NEB, 11 images, FIRE). :func:`neb_barrier` runs that
protocol for any ASE calculator: both endpoints are relaxed with the same calculator
first (so each model's barrier is measured from its own minima), then a climbing-image
NEB between them. :func:`reflect_through_plane` makes the mirror-image endpoint of an
inversion (ammonia: the nitrogen through the plane of the hydrogens).

All energies are eV and positions Angstrom (ASE's units, and advmd's model units).

Examples
--------
>>> from advmd.ase_calculator import CommitteeCalculator
>>> from advmd.diagnostics.barrier import neb_barrier, reflect_through_plane
>>> inverted = reflect_through_plane(ground, plane_atoms=(1, 2, 3))  # doctest: +SKIP
>>> result = neb_barrier(lambda: CommitteeCalculator("gen-002/committee.pt"), ground, inverted)  # doctest: +SKIP
>>> result.barrier  # eV, from the lower endpoint to the highest image  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["BarrierResult", "neb_barrier", "reflect_through_plane"]


@dataclass
class BarrierResult:
    """Outcome of :func:`neb_barrier` (eV, Angstrom).

    Attributes
    ----------
    barrier : float
        Highest image energy minus the lower relaxed endpoint energy.
    energies : list of float
        Energy of every image along the converged path, endpoints included.
    positions : ndarray, shape (n_images, n_atoms, 3)
    converged : bool
        Whether the band reached ``fmax`` within ``steps`` (endpoint relaxations included).
    steps : int
        FIRE steps taken by the band.
    """

    barrier: float
    energies: List[float]
    positions: np.ndarray
    converged: bool
    steps: int
    settings: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "barrier": self.barrier,
            "energies": list(self.energies),
            "converged": self.converged,
            "steps": self.steps,
            "settings": dict(self.settings),
        }


def reflect_through_plane(atoms: Any, plane_atoms: Sequence[int]) -> Any:
    """Mirror image of ``atoms`` through the plane of three of its atoms (which stay in place).

    For ammonia with ``plane_atoms`` the three hydrogens this is the inverted umbrella, the
    other endpoint of the nitrogen inversion. Returns a new ``ase.Atoms``.
    """
    indices = [int(i) for i in plane_atoms]
    if len(indices) != 3 or len(set(indices)) != 3 or not all(0 <= i < len(atoms) for i in indices):
        raise ValueError(f"plane_atoms must be three distinct atom indices below {len(atoms)}, got {list(plane_atoms)!r}")
    positions = atoms.get_positions()
    a, b, c = positions[indices]
    normal = np.cross(b - a, c - a)
    norm = np.linalg.norm(normal)
    if norm < 1e-8:
        raise ValueError(f"plane_atoms {indices} are collinear; they do not define a plane")
    normal /= norm
    distance = (positions - a) @ normal
    mirrored = atoms.copy()
    mirrored.set_positions(positions - 2.0 * distance[:, None] * normal[None, :])
    return mirrored


def _relax(atoms: Any, calculator: Any, fmax: float, steps: int) -> bool:
    # FIRE, not BFGS: a float32 model's force noise near the minimum can break BFGS's Hessian update
    # (numpy's eigh fails to converge), while FIRE needs no Hessian.
    from ase.optimize import FIRE

    atoms.calc = calculator
    optimizer = FIRE(atoms, logfile=None)
    return bool(optimizer.run(fmax=fmax, steps=steps))


def neb_barrier(
    calculator_factory: Callable[[], Any],
    initial: Any,
    final: Any,
    n_images: int = 11,
    fmax: float = 0.01,
    steps: int = 1000,
    climb: bool = True,
    relax_endpoints: bool = True,
    spring: float = 0.1,
) -> BarrierResult:
    """Climbing-image NEB barrier between two structures with one calculator.

    Parameters
    ----------
    calculator_factory : callable
        Returns a fresh ASE calculator (each image needs its own).
    initial, final : ase.Atoms
        Endpoints (same atoms in the same order).
    n_images : int
        Images including the endpoints (paper: 11).
    fmax : float
        Force convergence (eV/Angstrom) for endpoints and band.
    steps : int
        Maximum optimiser steps (FIRE), for each endpoint and for the band.
    climb : bool
        Climbing image (the highest image climbs to the saddle point).
    relax_endpoints : bool
        Relax both endpoints with this calculator first.
    spring : float
        Spring constant between images (eV/Angstrom^2).
    """
    from ase.mep import NEB
    from ase.optimize import FIRE

    if int(n_images) != n_images or n_images < 3:
        raise ValueError(f"n_images must be an integer >= 3 (endpoints included), got {n_images!r}")
    if len(initial) != len(final) or list(initial.numbers) != list(final.numbers):
        raise ValueError("initial and final must hold the same atoms in the same order")
    if not fmax > 0 or int(steps) != steps or steps < 1:
        raise ValueError(f"fmax must be > 0 and steps a positive integer, got fmax={fmax!r}, steps={steps!r}")
    start, end = initial.copy(), final.copy()
    converged = True
    if relax_endpoints:
        converged &= _relax(start, calculator_factory(), fmax, int(steps))
        converged &= _relax(end, calculator_factory(), fmax, int(steps))
    else:
        start.calc, end.calc = calculator_factory(), calculator_factory()
    images = [start] + [start.copy() for _ in range(int(n_images) - 2)] + [end]
    for image in images[1:-1]:
        image.calc = calculator_factory()
    band = NEB(images, k=spring, climb=climb, method="improvedtangent")
    band.interpolate()
    optimizer = FIRE(band, logfile=None)
    band_converged = bool(optimizer.run(fmax=fmax, steps=int(steps)))
    energies = [float(image.get_potential_energy()) for image in images]
    if not band_converged:
        logger.warning("NEB did not reach fmax=%g eV/A in %d steps; the barrier is approximate", fmax, steps)
    return BarrierResult(
        barrier=float(max(energies) - min(energies[0], energies[-1])),
        energies=energies,
        positions=np.array([image.get_positions() for image in images]),
        converged=bool(converged and band_converged),
        steps=int(optimizer.nsteps),
        settings={
            "n_images": int(n_images),
            "fmax": fmax,
            "climb": climb,
            "spring": spring,
            "method": "improvedtangent",
            "relax_endpoints": relax_endpoints,
        },
    )
