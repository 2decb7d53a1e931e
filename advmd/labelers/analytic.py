"""The paper's analytic potentials as labelers (Eq. 15 and its 1D analogue).

Coordinates are the x (and y) of the single particle of a structure; energies
are in the paper's reduced units, stored as eV with lengths as Angstrom.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from advmd.labelers.base import Labeler

__all__ = ["DoubleWell2D", "DoubleWell1D", "double_well_2d", "double_well_1d"]


def double_well_2d(xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Paper Eq. 15: ``E(x, y) = 10 x^4 - 10 x^2 + 2 x + 4 y^2`` and its gradient.

    Parameters
    ----------
    xy : ndarray, shape (..., 2)

    Returns
    -------
    energy : ndarray, shape (...)
    gradient : ndarray, shape (..., 2)
    """
    x, y = xy[..., 0], xy[..., 1]
    energy = 10 * x**4 - 10 * x**2 + 2 * x + 4 * y**2
    gradient = np.stack([40 * x**3 - 20 * x + 2, 8 * y], axis=-1)
    return energy, gradient


def double_well_1d(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The 1D section of Eq. 15: ``E(x) = 10 x^4 - 10 x^2 + 2 x`` and ``dE/dx``."""
    return 10 * x**4 - 10 * x**2 + 2 * x, 40 * x**3 - 20 * x + 2


class DoubleWell2D(Labeler):
    """Eq. 15 on the (x, y) of a one-particle structure; forces have zero z component."""

    name = "double-well-2d"

    def settings(self) -> Dict[str, Any]:
        return {"formula": "10x^4 - 10x^2 + 2x + 4y^2", "paper": "Eq. 15"}

    def check(self, structures) -> None:
        for k, atoms in enumerate(structures):
            if len(atoms) != 1:
                raise ValueError(f"structure {k} has {len(atoms)} atoms; the 2D double well takes one particle at (x, y, 0)")

    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        energy, gradient = double_well_2d(atoms.positions[0, :2])
        return float(energy), np.array([[-gradient[0], -gradient[1], 0.0]])


class DoubleWell1D(Labeler):
    """The 1D double well on the x of a one-particle structure."""

    name = "double-well-1d"

    def settings(self) -> Dict[str, Any]:
        return {"formula": "10x^4 - 10x^2 + 2x"}

    def check(self, structures) -> None:
        for k, atoms in enumerate(structures):
            if len(atoms) != 1:
                raise ValueError(f"structure {k} has {len(atoms)} atoms; the 1D double well takes one particle")

    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        energy, gradient = double_well_1d(atoms.positions[0, 0])
        return float(energy), np.array([[-float(gradient), 0.0, 0.0]])
