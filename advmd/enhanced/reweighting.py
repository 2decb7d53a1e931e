"""Unbiased averages and free-energy surfaces from biased MD.

A run on ``U(R) + V(R)`` samples ``p_b(R) ~ exp(-beta (U + V))``. Because the
uncertainty bias ``V`` is a function of the coordinates (at a given strength), the
unbiased ensemble follows by importance weights ``w_i ~ exp(+beta V(R_i))``:

``<A>_U = sum_i w_i A(R_i) / sum_i w_i``.

The weights are handled in log space (no overflow for any bias size). Their spread
is summarised by Kish's effective sample size ``ESS = (sum w)^2 / sum w^2``: a run
whose weights are dominated by a few frames has a small ESS and unreliable averages,
and the functions here warn (:class:`ReweightingWarning`) when that happens.

A schedule that changes the strength during the run is handled frame by frame (each
frame carries the bias it was sampled with). That is exact for piecewise-constant
strengths only when each segment has equilibrated; treat results of fast ramps as
approximate.

Units: bias energies in kJ/mol (OpenMM's ``bias_energy_kjmol`` column of
:class:`~advmd.openmm.reporters.UncertaintyReporter`), temperatures in K, free energies
in kJ/mol.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from advmd import units

logger = logging.getLogger(__name__)

__all__ = [
    "FreeEnergySurface",
    "ReweightingWarning",
    "effective_sample_size",
    "free_energy_surface",
    "reweighting_log_weights",
    "weighted_average",
]

#: kJ/mol/K
GAS_CONSTANT_KJ_PER_MOL_K = units.BOLTZMANN_EV_PER_K * units.EV_TO_KJ_PER_MOL


class ReweightingWarning(UserWarning):
    """The reweighted estimate rests on few effective samples."""


def _beta(temperature_k: float) -> float:
    if not (math.isfinite(temperature_k) and temperature_k > 0):
        raise ValueError(f"temperature_k must be > 0 K, got {temperature_k!r}")
    return 1.0 / (GAS_CONSTANT_KJ_PER_MOL_K * temperature_k)


def _logsumexp(values: np.ndarray) -> float:
    top = float(np.max(values))
    return top + math.log(float(np.sum(np.exp(values - top))))


def reweighting_log_weights(bias_energy_kjmol: Sequence[float], temperature_k: float) -> np.ndarray:
    """Normalised log weights ``log w_i = beta V_i - log sum_j exp(beta V_j)``.

    Parameters
    ----------
    bias_energy_kjmol : sequence of float (S,), unit kJ/mol
        The bias energy of each frame, as it was applied when the frame was sampled.
    temperature_k : float, unit K

    Returns
    -------
    ndarray (S,)
        ``exp`` of it sums to 1.
    """
    bias = np.asarray(bias_energy_kjmol, dtype=np.float64).reshape(-1)
    if bias.size == 0:
        raise ValueError("no frames to reweight")
    bad = np.flatnonzero(~np.isfinite(bias))
    if len(bad):
        raise ValueError(f"bias_energy_kjmol[{bad[0]}] is {bias[bad[0]]}; drop frames of a diverged run before reweighting")
    scaled = _beta(temperature_k) * bias
    return scaled - _logsumexp(scaled)


def effective_sample_size(log_weights: Sequence[float]) -> float:
    """Kish's ``(sum w)^2 / sum w^2`` from (unnormalised) log weights; equals S for equal weights."""
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if lw.size == 0:
        return 0.0
    return float(math.exp(2.0 * _logsumexp(lw) - _logsumexp(2.0 * lw)))


def weighted_average(values: Sequence[float], log_weights: Sequence[float]) -> float:
    """``sum w_i A_i / sum w_i`` with log weights (any normalisation)."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if a.shape != lw.shape:
        raise ValueError(f"values ({a.shape}) and log_weights ({lw.shape}) need one entry per frame")
    w = np.exp(lw - lw.max())
    return float(np.sum(w * a) / np.sum(w))


@dataclass
class FreeEnergySurface:
    """A reweighted free-energy surface over one or two collective variables.

    Attributes
    ----------
    edges : tuple of ndarray
        Bin edges per CV.
    free_energy : ndarray
        kJ/mol, minimum 0; NaN in empty bins and bins below ``min_bin_ess``.
    probability : ndarray
        Reweighted probability per bin, normalised over all frames (sums to 1 when every
        frame lies inside ``ranges``, less otherwise).
    bin_ess : ndarray
        Effective sample size of the frames in each bin.
    ess : float
        Effective sample size of the whole run.
    frames : int
    low_ess_bins : int
        Visited bins masked because their ESS is below ``min_bin_ess``.
    temperature_k : float
    """

    edges: Tuple[np.ndarray, ...]
    free_energy: np.ndarray
    probability: np.ndarray
    bin_ess: np.ndarray
    ess: float
    frames: int
    low_ess_bins: int
    temperature_k: float

    @property
    def ess_fraction(self) -> float:
        return self.ess / self.frames if self.frames else 0.0

    def summary(self) -> Dict[str, Any]:
        return {
            "frames": self.frames,
            "ess": self.ess,
            "ess_fraction": self.ess_fraction,
            "visited_bins": int(np.sum(self.probability > 0)),
            "bins": int(self.probability.size),
            "low_ess_bins": self.low_ess_bins,
            "temperature_k": self.temperature_k,
        }


def free_energy_surface(
    cv: Union[Sequence[float], np.ndarray],
    bias_energy_kjmol: Optional[Sequence[float]],
    temperature_k: float,
    bins: Union[int, Sequence[int]] = 36,
    ranges: Optional[Sequence[Tuple[float, float]]] = None,
    min_bin_ess: float = 5.0,
    min_ess_fraction: float = 0.01,
) -> FreeEnergySurface:
    """``F(s) = -kT log p(s)`` over one or two CVs, reweighted from a biased run.

    Parameters
    ----------
    cv : array (S,) or (S, d), d = 1 or 2
        Collective variables of each frame (e.g. phi/psi in radians).
    bias_energy_kjmol : array (S,), unit kJ/mol, or None
        Bias of each frame; ``None`` for an unbiased run (equal weights).
    temperature_k : float, unit K
    bins : int or sequence of int
    ranges : sequence of (low, high) per CV, optional
        Default: ``(-pi, pi)`` for every CV (dihedrals).
    min_bin_ess : float
        Bins whose frames have a smaller ESS are masked (NaN) and counted.
    min_ess_fraction : float
        Warn when the run's ESS is below this fraction of its frames.

    Returns
    -------
    FreeEnergySurface
    """
    values = np.asarray(cv, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] not in (1, 2):
        raise ValueError(f"cv must have shape (S,) or (S, d) with d = 1 or 2, got {np.asarray(cv).shape}")
    n_frames, n_cv = values.shape
    if n_frames == 0:
        raise ValueError("no frames given")
    if not np.all(np.isfinite(values)):
        raise ValueError("cv contains NaN or infinite values")
    if bias_energy_kjmol is None:
        log_w = np.full(n_frames, -math.log(n_frames))
        _beta(temperature_k)
    else:
        if len(bias_energy_kjmol) != n_frames:
            raise ValueError(f"got {n_frames} CV frames but {len(bias_energy_kjmol)} bias energies; give one per frame")
        log_w = reweighting_log_weights(bias_energy_kjmol, temperature_k)
    bin_counts = [int(bins)] * n_cv if np.isscalar(bins) else [int(b) for b in bins]
    if len(bin_counts) != n_cv or min(bin_counts) < 1:
        raise ValueError(f"bins must be a positive integer or one per CV, got {bins!r}")
    ranges = [(-math.pi, math.pi)] * n_cv if ranges is None else [tuple(map(float, r)) for r in ranges]
    if len(ranges) != n_cv or any(not hi > lo for lo, hi in ranges):
        raise ValueError(f"ranges must give (low, high) with high > low for each of the {n_cv} CVs, got {ranges!r}")
    edges = tuple(np.linspace(lo, hi, b + 1) for (lo, hi), b in zip(ranges, bin_counts))
    index = []
    inside = np.ones(n_frames, dtype=bool)
    for d in range(n_cv):
        k = np.searchsorted(edges[d], values[:, d], side="right") - 1
        k[values[:, d] == edges[d][-1]] = bin_counts[d] - 1
        inside &= (k >= 0) & (k < bin_counts[d])
        index.append(np.clip(k, 0, bin_counts[d] - 1))
    flat = np.ravel_multi_index(index, bin_counts)
    w = np.exp(log_w - log_w.max())
    w[~inside] = 0.0
    total = float(np.sum(np.exp(log_w - log_w.max())))
    sum_w = np.bincount(flat, weights=w, minlength=int(np.prod(bin_counts)))
    sum_w2 = np.bincount(flat, weights=w**2, minlength=int(np.prod(bin_counts)))
    with np.errstate(divide="ignore", invalid="ignore"):
        bin_ess = np.where(sum_w2 > 0, sum_w**2 / sum_w2, 0.0)
        probability = sum_w / total
        kt = GAS_CONSTANT_KJ_PER_MOL_K * temperature_k
        free = -kt * np.log(probability)
    masked = (probability > 0) & (bin_ess < min_bin_ess)
    free[(probability == 0) | masked] = np.nan
    if np.any(np.isfinite(free)):
        free = free - np.nanmin(free)
    ess = effective_sample_size(log_w)
    surface = FreeEnergySurface(
        edges=edges,
        free_energy=free.reshape(bin_counts),
        probability=probability.reshape(bin_counts),
        bin_ess=bin_ess.reshape(bin_counts),
        ess=ess,
        frames=n_frames,
        low_ess_bins=int(masked.sum()),
        temperature_k=float(temperature_k),
    )
    if ess < min_ess_fraction * n_frames:
        warnings.warn(
            f"reweighting keeps an effective sample size of {ess:.1f} of {n_frames} frames ({ess / n_frames:.2%}); the bias "
            "is too strong for this run length: the free-energy surface is unreliable (lower the strength or run longer)",
            ReweightingWarning,
            stacklevel=2,
        )
    if surface.low_ess_bins:
        logger.info("%d visited bins masked: ESS below %.1f", surface.low_ess_bins, min_bin_ess)
    return surface
