"""How well a run explores collective-variable space: basin visits, coverage, free-energy error.

Used by the enhanced-sampling harness (``scripts/harness_enhanced_sampling.py``) to compare
plain MD, uncertainty-biased MD and metadynamics on alanine dipeptide's phi/psi.
Angles in radians inside the functions; basin centres are given in degrees, as in the
literature.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "ALANINE_BASINS",
    "basin_of",
    "first_visit_times",
    "free_energy_error",
    "phi_psi",
    "visited_fraction",
]

#: Alanine dipeptide conformers in vacuum (phi, psi in degrees) and the radius (degrees) that counts as a visit.
ALANINE_BASINS: Dict[str, Tuple[float, float]] = {
    "C7eq": (-83.0, 73.0),
    "C7ax": (72.0, -62.0),
    "alpha_L": (60.0, 40.0),
}
BASIN_RADIUS_DEG = 30.0


def phi_psi(positions_angstrom: np.ndarray, topology) -> np.ndarray:
    """phi and psi (radians, in (-pi, pi]) of every frame of a peptide; shape (S, 2).

    Parameters
    ----------
    positions_angstrom : ndarray (S, N, 3) or (N, 3)
    topology : openmm.app.Topology or mdtraj.Topology
    """
    import torch

    from advmd.attacks import dihedral_angles, peptide_dihedrals

    quadruples = torch.tensor(peptide_dihedrals(topology, ("phi", "psi")))
    if len(quadruples) != 2:
        raise ValueError(f"phi_psi needs a dipeptide (one phi and one psi), found {len(quadruples)} dihedrals")
    angles = dihedral_angles(torch.as_tensor(np.asarray(positions_angstrom, dtype=np.float64)), quadruples)
    return angles.numpy().reshape(-1, 2)


def _periodic_distance_deg(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs((a - b + 180.0) % 360.0 - 180.0)


def basin_of(cv: np.ndarray, basins: Optional[Dict[str, Tuple[float, float]]] = None, radius_deg: float = BASIN_RADIUS_DEG):
    """Name of the basin each frame is in (within ``radius_deg`` of its centre), or ``""``."""
    basins = ALANINE_BASINS if basins is None else basins
    angles = np.degrees(np.asarray(cv, dtype=np.float64).reshape(-1, 2))
    names = np.full(len(angles), "", dtype=object)
    for name, (phi0, psi0) in basins.items():
        distance = np.hypot(_periodic_distance_deg(angles[:, 0], phi0), _periodic_distance_deg(angles[:, 1], psi0))
        names[(distance <= radius_deg) & (names == "")] = name
    return names


def first_visit_times(
    cv: np.ndarray,
    times_ps: Sequence[float],
    basins: Optional[Dict[str, Tuple[float, float]]] = None,
    radius_deg: float = BASIN_RADIUS_DEG,
) -> Dict[str, Optional[float]]:
    """Time (ps) of the first frame inside each basin; ``None`` for a basin never visited."""
    basins = ALANINE_BASINS if basins is None else basins
    times = np.asarray(times_ps, dtype=np.float64)
    names = basin_of(cv, basins, radius_deg)
    if len(times) != len(names):
        raise ValueError(f"got {len(names)} CV frames but {len(times)} times; give one time per frame")
    out: Dict[str, Optional[float]] = {}
    for name in basins:
        hits = np.flatnonzero(names == name)
        out[name] = float(times[hits[0]]) if len(hits) else None
    return out


def visited_fraction(cv: np.ndarray, bins: int = 36) -> float:
    """Fraction of a ``bins x bins`` phi/psi grid (over (-pi, pi]^2) with at least one frame."""
    angles = np.asarray(cv, dtype=np.float64).reshape(-1, 2)
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    counts, _, _ = np.histogram2d(angles[:, 0], angles[:, 1], bins=[edges, edges])
    return float(np.mean(counts > 0))


def free_energy_error(
    free_energy: np.ndarray, reference: np.ndarray, max_reference_kjmol: float = 20.0, min_bins: int = 5
) -> Dict[str, float]:
    """RMSE (kJ/mol) between two free-energy surfaces on the bins where the reference is below a cap.

    Both surfaces are shifted to zero mean over the compared bins (a free energy is
    defined up to a constant). Bins the run never reached count in ``missing_fraction``
    and are left out of the RMSE; with fewer than ``min_bins`` compared bins the RMSE is
    NaN (a shift-free comparison of one or two bins is meaningless).
    """
    f = np.asarray(free_energy, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if f.shape != ref.shape:
        raise ValueError(f"free-energy grids differ in shape: {f.shape} vs reference {ref.shape}")
    relevant = np.isfinite(ref) & (ref <= max_reference_kjmol)
    if not relevant.any():
        raise ValueError("the reference has no bins below max_reference_kjmol")
    both = relevant & np.isfinite(f)
    missing = 1.0 - both.sum() / relevant.sum()
    if both.sum() < max(int(min_bins), 1):
        return {"rmse_kjmol": float("nan"), "missing_fraction": float(missing), "bins": int(relevant.sum())}
    diff = (f[both] - f[both].mean()) - (ref[both] - ref[both].mean())
    return {"rmse_kjmol": float(np.sqrt(np.mean(diff**2))), "missing_fraction": float(missing), "bins": int(relevant.sum())}
