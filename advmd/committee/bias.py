"""Uncertainty-bias potentials: energy terms that are functions of committee disagreement.

Every bias is a TorchScript module with the **bias interface**::

    forward(sigma_e2: Tensor[] (eV^2), sigma_f2: Tensor[] ((eV/Angstrom)^2),
            n_atoms: int, strength: Tensor[]) -> Tensor[] (eV)

where ``sigma_e2`` and ``sigma_f2`` are the committee variances of paper
Eq. 5 and Eq. 7 (divisor ``M-1``) and ``strength`` is the adjustable amplitude
(an OpenMM global parameter at run time). Each bias declares which variance it
depends on (``uses_energy_uncertainty``, ``uses_force_uncertainty``) so the
potential knows whether forces need second derivatives, and the unit of its
strength (``strength_unit``: ``"energy"`` in eV, ``"length"`` in Angstrom, or
``"none"``) so engines can convert it at their boundary.

Built-in forms
--------------
``none``
    No bias.
``udd``
    Uncertainty-driven dynamics (Kulichenko et al., Nat. Comput. Sci. 3, 230, 2023):
    ``A * (exp(-s2 / (N_M * N_A * B^2)) - 1)`` with ``A = strength`` (eV),
    ``N_M`` members, ``N_A`` atoms, width ``B`` (eV), and ``s2`` the **sum** of
    squared member deviations ``sum_m (E_m - E_mean)^2 = (M - 1) sigma_E^2`` so
    that ``s2 / N_M`` is a per-member variance. Any constant factor between this
    and another code's convention is absorbed by ``B``. The bias lies in
    ``[-A, 0]``: it lowers the energy where the committee disagrees.
``hal``
    Hyperactive learning (van der Oord et al., npj Comput. Mater. 9, 168, 2023):
    ``-tau * sigma_F`` with ``tau = strength`` (Angstrom) and
    ``sigma_F = sqrt(sigma_F^2 + eps^2)``, ``eps = 1e-6 eV/Angstrom`` (keeps the
    gradient finite when all members agree; changes sigma_F by at most eps).
"""

import math
import os
from typing import Callable, Dict, Union

import torch
from torch import Tensor, nn

from advmd.errors import ModelFileError

__all__ = ["NoBias", "UDDBias", "HALBias", "CustomBias", "make_bias", "BIAS_FORMS"]

STRENGTH_UNITS = ("energy", "length", "none")


class NoBias(nn.Module):
    """The zero bias."""

    form: str
    uses_energy_uncertainty: bool
    uses_force_uncertainty: bool
    strength_unit: str

    def __init__(self) -> None:
        super().__init__()
        self.form = "none"
        self.uses_energy_uncertainty = False
        self.uses_force_uncertainty = False
        self.strength_unit = "none"

    def forward(self, sigma_e2: Tensor, sigma_f2: Tensor, n_atoms: int, strength: Tensor) -> Tensor:
        return torch.zeros_like(sigma_e2)


class UDDBias(nn.Module):
    """UDD exponential bias of the energy variance (see module doc).

    Parameters
    ----------
    n_members : int
        Committee size ``N_M``.
    width : float, unit eV
        ``B`` of the UDD formula (> 0).
    """

    form: str
    uses_energy_uncertainty: bool
    uses_force_uncertainty: bool
    strength_unit: str

    def __init__(self, n_members: int, width: float) -> None:
        super().__init__()
        if int(n_members) != n_members or n_members < 2:
            raise ValueError(f"udd bias: n_members must be an integer >= 2, got {n_members!r}")
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"udd bias: width B must be a finite energy > 0 eV, got {width!r}")
        self.form = "udd"
        self.uses_energy_uncertainty = True
        self.uses_force_uncertainty = False
        self.strength_unit = "energy"
        self.n_members = int(n_members)
        self.width = float(width)

    def forward(self, sigma_e2: Tensor, sigma_f2: Tensor, n_atoms: int, strength: Tensor) -> Tensor:
        squared_deviation_sum = sigma_e2 * (self.n_members - 1)
        scale = self.n_members * n_atoms * self.width * self.width
        return strength * (torch.exp(-squared_deviation_sum / scale) - 1.0)


class HALBias(nn.Module):
    """HAL linear bias ``-tau * sigma_F`` (see module doc)."""

    form: str
    uses_energy_uncertainty: bool
    uses_force_uncertainty: bool
    strength_unit: str

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__()
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"hal bias: epsilon must be > 0 eV/Angstrom, got {epsilon!r}")
        self.form = "hal"
        self.uses_energy_uncertainty = False
        self.uses_force_uncertainty = True
        self.strength_unit = "length"
        self.epsilon = float(epsilon)

    def forward(self, sigma_e2: Tensor, sigma_f2: Tensor, n_atoms: int, strength: Tensor) -> Tensor:
        return -strength * torch.sqrt(sigma_f2 + self.epsilon * self.epsilon)


class CustomBias(nn.Module):
    """Wraps a user-supplied TorchScript bias module implementing the bias interface.

    Parameters
    ----------
    module : torch.nn.Module, ScriptModule, or path to a ``torch.jit.save`` file
    uses_energy_uncertainty, uses_force_uncertainty : bool
        Which variances the function depends on. Declaring a dependence that
        is absent is harmless (slower); omitting one that is present gives
        wrong forces, so both default to ``True``.
    strength_unit : {"energy", "length", "none"}
        How engines convert the strength at their boundary.

    Notes
    -----
    The module must be a pure function of its arguments (no state kept between
    calls, no dependence on time): the OpenMM forces return their kept result
    when called again with the same positions, box and strength.
    """

    form: str
    uses_energy_uncertainty: bool
    uses_force_uncertainty: bool
    strength_unit: str

    def __init__(
        self,
        module: Union[nn.Module, str, os.PathLike],
        uses_energy_uncertainty: bool = True,
        uses_force_uncertainty: bool = True,
        strength_unit: str = "none",
    ) -> None:
        super().__init__()
        if isinstance(module, (str, os.PathLike)):
            path = str(module)
            if not os.path.isfile(path):
                raise ModelFileError(f"custom bias file {path!r} does not exist; give a torch.jit.save file")
            try:
                module = torch.jit.load(path, map_location="cpu")
            except Exception as error:
                raise ModelFileError(
                    f"custom bias file {path!r} is not a readable TorchScript archive; "
                    "save it with torch.jit.save(torch.jit.script(bias), path)"
                ) from error
        if not isinstance(module, torch.jit.ScriptModule):
            try:
                module = torch.jit.script(module)
            except Exception as error:
                raise TypeError(
                    "custom bias must be TorchScript-compatible with forward(sigma_e2: Tensor, "
                    "sigma_f2: Tensor, n_atoms: int, strength: Tensor) -> Tensor"
                ) from error
        if strength_unit not in STRENGTH_UNITS:
            raise ValueError(f"strength_unit must be one of {STRENGTH_UNITS}, got {strength_unit!r}")
        self.function = module
        self.form = "custom"
        self.uses_energy_uncertainty = bool(uses_energy_uncertainty)
        self.uses_force_uncertainty = bool(uses_force_uncertainty)
        self.strength_unit = strength_unit

    def forward(self, sigma_e2: Tensor, sigma_f2: Tensor, n_atoms: int, strength: Tensor) -> Tensor:
        return self.function(sigma_e2, sigma_f2, n_atoms, strength)


def _udd(n_members: int, width: float = 0.05, **unused: float) -> UDDBias:
    if unused:
        raise ValueError(f"udd bias takes n_members and width, not {sorted(unused)}")
    return UDDBias(n_members=n_members, width=width)


def _hal(n_members: int, epsilon: float = 1e-6, **unused: float) -> HALBias:
    if unused:
        raise ValueError(f"hal bias takes epsilon, not {sorted(unused)}")
    return HALBias(epsilon=epsilon)


def _none(n_members: int, **unused: float) -> NoBias:
    if unused:
        raise ValueError(f"bias form 'none' takes no parameters, got {sorted(unused)}")
    return NoBias()


#: Built-in bias forms by name.
BIAS_FORMS: Dict[str, Callable[..., nn.Module]] = {"none": _none, "udd": _udd, "hal": _hal}


def make_bias(form: str, n_members: int, **parameters: float) -> nn.Module:
    """Build a built-in bias by name.

    Parameters
    ----------
    form : {"none", "udd", "hal"}
    n_members : int
        Committee size (UDD's ``N_M``).
    **parameters
        ``width`` (eV) for ``udd``; ``epsilon`` (eV/Angstrom) for ``hal``.

    Examples
    --------
    >>> make_bias("udd", n_members=5, width=0.05).form
    'udd'
    """
    try:
        factory = BIAS_FORMS[form]
    except KeyError:
        raise ValueError(
            f"unknown bias form {form!r}; choose one of {sorted(BIAS_FORMS)} "
            "or pass a CustomBias for a user-supplied TorchScript function"
        ) from None
    return factory(n_members, **parameters)
