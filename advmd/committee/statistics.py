"""Committee statistics: named estimators, TorchScript-compatible.

For a committee of ``M`` members with energies ``E_m`` and forces ``F_m``
on ``n`` atoms:

* mean energy and forces (paper Eq. 4 and 6): plain averages over members;
* energy variance ``sigma_E^2`` (Eq. 5): **unbiased sample variance, divisor M-1**;
* force variance ``sigma_F^2`` (Eq. 7): per-component sample variance with
  **divisor M-1**, averaged over the ``3n`` Cartesian components;
* maximum per-atom force deviation (DP-GEN "model deviation" ``max_devi_f``):
  ``max_i sqrt(mean_m |F_mi - mean_m F_mi|^2)``, the **population** (divisor M)
  root-mean-square deviation of each atom's force vector, as DP-GEN defines it.

All statistics need ``M >= 2``.
"""

from typing import Tuple

import torch
from torch import Tensor


def energy_variance(member_energies: Tensor) -> Tensor:
    """Committee energy variance, paper Eq. 5 (divisor ``M-1``).

    Parameters
    ----------
    member_energies : Tensor, shape (M,), unit eV

    Returns
    -------
    Tensor, shape (), unit eV^2
    """
    m = member_energies.shape[0]
    if m < 2:
        raise ValueError(f"committee statistics need at least 2 members, got M={m}")
    deviation = member_energies - member_energies.mean()
    return (deviation * deviation).sum() / (m - 1)


def force_variance(member_forces: Tensor) -> Tensor:
    """Committee force variance, paper Eq. 7 (divisor ``M-1``, mean over ``3n``).

    Parameters
    ----------
    member_forces : Tensor, shape (M, n, 3), unit eV/Angstrom

    Returns
    -------
    Tensor, shape (), unit (eV/Angstrom)^2
    """
    m = member_forces.shape[0]
    if m < 2:
        raise ValueError(f"committee statistics need at least 2 members, got M={m}")
    deviation = member_forces - member_forces.mean(0)
    return (deviation * deviation).sum() / ((m - 1) * member_forces.shape[1] * 3)


def atomic_force_deviation(member_forces: Tensor) -> Tensor:
    """Per-atom RMS force deviation, DP-GEN convention (divisor ``M``).

    Parameters
    ----------
    member_forces : Tensor, shape (M, n, 3), unit eV/Angstrom

    Returns
    -------
    Tensor, shape (n,), unit eV/Angstrom
    """
    deviation = member_forces - member_forces.mean(0)
    return torch.sqrt((deviation * deviation).sum(-1).mean(0))


def max_force_deviation(member_forces: Tensor) -> Tuple[Tensor, Tensor]:
    """DP-GEN model deviation: the largest per-atom RMS force deviation.

    Parameters
    ----------
    member_forces : Tensor, shape (M, n, 3), unit eV/Angstrom

    Returns
    -------
    value : Tensor, shape (), unit eV/Angstrom
    atom : Tensor, shape (), dtype int64
        Index of the atom that carries it.
    """
    per_atom = atomic_force_deviation(member_forces)
    atom = torch.argmax(per_atom)
    return per_atom[atom], atom
