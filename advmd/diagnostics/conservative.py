"""Is a force model conservative? (seed 004: Bigi, Langer and Ceriotti)

Two measurements:

* **Jacobian asymmetry.** Forces that are minus the gradient of an energy have a
  symmetric Jacobian ``J_ij = dF_i/dR_j`` (minus the Hessian). For any force model,
  ``lambda = ||J_anti||_F / ||J||_F`` with ``J_anti = (J - J^T)/2`` is 0 for a
  conservative model and 1 for a purely rotational field (``J`` antisymmetric).
  :func:`force_jacobian` builds ``J`` by autograd (a differentiable torch force
  function) or by central finite differences (any :class:`~advmd.labelers.Labeler`).
* **NVE energy drift.** :func:`nve_drift` runs velocity Verlet in OpenMM on any
  ``System`` (an advmd committee, a force field, a custom ``PythonForce``) and fits
  the drift of the total energy per ps, with the kinetic-temperature trace.

Units: Angstrom and eV/Angstrom for Jacobians (``J`` in eV/Angstrom^2); OpenMM's
kJ/mol, ps and K for the NVE run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = [
    "NVEResult",
    "committee_force_function",
    "force_jacobian",
    "jacobian_asymmetry",
    "labeler_force_function",
    "nve_drift",
]

METHODS = ("autograd", "finite-difference")


def jacobian_asymmetry(jacobian: np.ndarray) -> float:
    """``lambda = ||(J - J^T)/2||_F / ||J||_F`` (0: conservative; 1: purely rotational).

    Parameters
    ----------
    jacobian : ndarray, shape (3N, 3N)

    Returns
    -------
    float
        0.0 for a zero Jacobian (a constant force field is conservative).
    """
    jac = np.asarray(jacobian, dtype=np.float64)
    if jac.ndim != 2 or jac.shape[0] != jac.shape[1]:
        raise ValueError(f"jacobian must be square (3N, 3N), got shape {jac.shape}")
    if not np.all(np.isfinite(jac)):
        raise ValueError("jacobian contains NaN or infinite values; check the force model at this structure")
    norm = float(np.linalg.norm(jac))
    if norm == 0.0:
        return 0.0
    return float(np.linalg.norm(0.5 * (jac - jac.T)) / norm)


def committee_force_function(
    potential: torch.nn.Module, atomic_numbers: Sequence[int], cell: Optional[np.ndarray] = None, bias_strength: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """A differentiable ``positions (N, 3) Angstrom -> forces (N, 3) eV/Angstrom`` of a committee.

    The forces are the model's total forces (mean plus bias at ``bias_strength``),
    evaluated with ``create_graph=True`` so that autograd can differentiate them.
    Works for an eager :class:`~advmd.committee.CommitteePotential` and for an
    exported (TorchScript) committee.
    """
    param = next(iter(potential.parameters()), None)
    dtype = param.dtype if param is not None else torch.float64
    device = param.device if param is not None else torch.device("cpu")
    numbers = torch.as_tensor(np.asarray(atomic_numbers), dtype=torch.long, device=device)
    box = None if cell is None else torch.as_tensor(np.asarray(cell), dtype=dtype, device=device)
    strength = torch.tensor(float(bias_strength), dtype=dtype, device=device)

    def forces(positions: Tensor) -> Tensor:
        return potential.evaluate(positions.to(dtype), numbers, box, strength, True)["forces"]

    return forces


def labeler_force_function(labeler: Any, atoms: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``positions (N, 3) Angstrom -> forces (N, 3) eV/Angstrom`` of any labeler (for finite differences)."""
    template = atoms.copy()

    def forces(positions: np.ndarray) -> np.ndarray:
        work = template.copy()
        work.positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        result = labeler.label([work])
        if result.failures:
            raise RuntimeError(f"labeler {labeler.name!r} failed during the finite-difference Jacobian: {result.failures[0]}")
        return np.asarray(result.forces[0], dtype=np.float64)

    return forces


def force_jacobian(
    force_function: Callable[[Any], Any], positions: np.ndarray, method: str = "autograd", step: float = 1e-3
) -> np.ndarray:
    """Jacobian ``J_ij = dF_i/dR_j`` of a force model at one structure.

    Parameters
    ----------
    force_function : callable
        ``positions (N, 3) -> forces (N, 3)``: torch tensors for ``autograd`` (the
        forces must carry a graph), numpy arrays (or tensors) for ``finite-difference``.
    positions : ndarray, shape (N, 3), unit Angstrom
    method : {"autograd", "finite-difference"}
    step : float, unit Angstrom
        Central-difference displacement.

    Returns
    -------
    ndarray, shape (3N, 3N), unit eV/Angstrom^2
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    base = np.asarray(positions, dtype=np.float64)
    if base.ndim != 2 or base.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {base.shape}")
    if not np.all(np.isfinite(base)):
        raise ValueError("positions contain NaN or infinite values")
    n = base.size
    if method == "autograd":
        x = torch.tensor(base, dtype=torch.float64, requires_grad=True)
        forces = force_function(x)
        if not isinstance(forces, Tensor) or not forces.requires_grad:
            raise TypeError(
                "method='autograd' needs a torch force function whose output carries a graph; use "
                "method='finite-difference' for labelers and other non-differentiable models"
            )
        flat = forces.reshape(-1)
        rows = []
        for i in range(n):
            grad = torch.autograd.grad(flat[i], x, retain_graph=True, allow_unused=True)[0]
            rows.append(np.zeros(n) if grad is None else grad.detach().cpu().numpy().reshape(-1))
        return np.array(rows)
    if not (step > 0 and np.isfinite(step)):
        raise ValueError(f"step must be > 0 Angstrom, got {step!r}")

    def evaluate(pos: np.ndarray) -> np.ndarray:
        out = force_function(pos)
        if isinstance(out, Tensor):
            out = out.detach().cpu().numpy()
        return np.asarray(out, dtype=np.float64).reshape(-1)

    jac = np.empty((n, n))
    for j in range(n):
        plus = base.copy().reshape(-1)
        minus = base.copy().reshape(-1)
        plus[j] += step
        minus[j] -= step
        jac[:, j] = (evaluate(plus.reshape(-1, 3)) - evaluate(minus.reshape(-1, 3))) / (2.0 * step)
    return jac


def _initial_velocities(system: Any, temperature_k: float, seed: int) -> np.ndarray:
    """Seeded Maxwell-Boltzmann velocities (nm/ps) with zero total momentum.

    Without net momentum a ``CMMotionRemover`` does not change the energy of an NVE run.
    """
    from advmd.units import AVOGADRO_PER_MOL, BOLTZMANN_EV_PER_K, ELEMENTARY_CHARGE_C

    masses = np.array([system.getParticleMass(i)._value for i in range(system.getNumParticles())])  # dalton
    rng = np.random.default_rng(seed)
    # kT/m in (nm/ps)^2: kT in J, m in kg (dalton = 1e-3 kg/mol / N_A), 1 m/s = 1e-3 nm/ps
    kt_joule = BOLTZMANN_EV_PER_K * ELEMENTARY_CHARGE_C * temperature_k
    velocities = np.zeros((len(masses), 3))
    moving = masses > 0
    sigma = np.sqrt(kt_joule / (masses[moving] * 1e-3 / AVOGADRO_PER_MOL)) * 1e-3
    velocities[moving] = rng.normal(size=(int(moving.sum()), 3)) * sigma[:, None]
    if moving.sum() > 1:
        velocities[moving] -= (masses[moving, None] * velocities[moving]).sum(0) / masses[moving].sum()
    return velocities


def _keeps_zero_momentum(system: Any, context: Any) -> bool:
    """Whether NVE keeps the start's zero net momentum without a ``CMMotionRemover`` (which is counted already).

    True for more than one moving particle when the net force vanishes at the start and after two rigid
    translations (a translation-invariant potential: an advmd committee, a force field); an external field
    breaks it. The net force, not the energy: a float32 model's energy moves by rounding under a translation
    (1e-4 kJ/mol of 63 for the shipped committee), its net force stays 1e-8 of the total force magnitude.
    """
    import openmm
    from openmm import unit

    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    if sum(1 for m in masses if m > 0) < 2 or any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        return False
    x = context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    try:
        for shift in ([0.0, 0.0, 0.0], [0.037, -0.021, 0.013], [-0.011, 0.029, -0.043]):  # nm
            context.setPositions((x + np.array(shift)) * unit.nanometer)
            forces = context.getState(forces=True).getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
            forces = np.asarray(forces)
            if not np.all(np.isfinite(forces)):
                return False
            if np.linalg.norm(forces.sum(0)) > 1e-4 * np.linalg.norm(forces, axis=1).sum() + 1e-9:
                return False
    finally:
        context.setPositions(x * unit.nanometer)
    return True


@dataclass
class NVEResult:
    """An NVE trajectory's energies and temperature, with a linear drift fit.

    Attributes
    ----------
    time_ps : ndarray (K,)
    total_energy, potential_energy, kinetic_energy : ndarray (K,), kJ/mol
    temperature_k : ndarray (K,), K (kinetic temperature, ``2 KE / (N_dof k_B)``)
    drift_kj_per_mol_per_ps : float
        Slope of a least-squares line through the total energy.
    max_deviation_kj_per_mol : float
        Largest ``|E(t) - E(0)|``.
    degrees_of_freedom : int
    diverged : bool
        The run stopped early: a non-finite energy, a temperature past the limit, or an
        error from a force (e.g. a model refusing NaN positions).
    """

    time_ps: np.ndarray
    total_energy: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    temperature_k: np.ndarray
    drift_kj_per_mol_per_ps: float
    max_deviation_kj_per_mol: float
    degrees_of_freedom: int
    diverged: bool
    timestep_fs: float

    @property
    def drift_per_dof_kt_per_ps(self) -> float:
        """Drift per degree of freedom in units of kT at the mean temperature, per ps (size-independent)."""
        from advmd.units import BOLTZMANN_EV_PER_K, EV_TO_KJ_PER_MOL

        temperature = float(np.mean(self.temperature_k)) if len(self.temperature_k) else float("nan")
        kt = BOLTZMANN_EV_PER_K * EV_TO_KJ_PER_MOL * temperature
        return self.drift_kj_per_mol_per_ps / (self.degrees_of_freedom * kt) if kt > 0 else float("nan")

    def summary(self) -> Dict[str, Any]:
        return {
            "timestep_fs": self.timestep_fs,
            "duration_ps": float(self.time_ps[-1]) if len(self.time_ps) else 0.0,
            "drift_kj_per_mol_per_ps": self.drift_kj_per_mol_per_ps,
            "drift_per_dof_kt_per_ps": self.drift_per_dof_kt_per_ps,
            "max_deviation_kj_per_mol": self.max_deviation_kj_per_mol,
            "temperature_start_k": float(self.temperature_k[0]) if len(self.temperature_k) else float("nan"),
            "temperature_end_k": float(self.temperature_k[-1]) if len(self.temperature_k) else float("nan"),
            "temperature_mean_k": float(np.mean(self.temperature_k)) if len(self.temperature_k) else float("nan"),
            "degrees_of_freedom": self.degrees_of_freedom,
            "diverged": self.diverged,
        }


def nve_drift(
    system: Any,
    positions: Any,
    *,
    timestep_fs: float = 0.5,
    duration_ps: float = 1.0,
    temperature_k: float = 300.0,
    report_every: int = 10,
    platform: Optional[str] = None,
    seed: int = 1,
    max_temperature_k: float = 1.0e5,
) -> NVEResult:
    """Run Verlet dynamics (NVE; OpenMM's leapfrog ``VerletIntegrator``) on a ``System`` and measure the energy drift.

    Parameters
    ----------
    system : openmm.System
        Any system: an advmd committee (:func:`advmd.openmm.create_system`), a force
        field, or a custom force. The initial velocities carry no net momentum, so a
        ``CMMotionRemover`` does not change the energy (it is counted in the degrees of
        freedom). Without one, a translation-invariant system keeps that zero momentum, and
        its 3 degrees of freedom are not counted either (temperatures read right).
    positions : (N, 3) positions in nm, or an OpenMM ``Quantity``
    timestep_fs : float, unit fs
    duration_ps : float, unit ps
    temperature_k : float, unit K
        Initial Maxwell-Boltzmann velocities (seeded), total momentum removed.
    report_every : int
        Steps between energy readings.
    platform : str, optional
        OpenMM platform name; default (or ``"auto"``): :func:`advmd.openmm.platforms.choose_platform`.
    seed : int
        Velocity seed: the run is reproducible.
    max_temperature_k : float, unit K
        Stop (``diverged=True``) when the kinetic temperature exceeds this.

    Returns
    -------
    NVEResult
    """
    import openmm
    from openmm import unit

    from advmd.openmm.platforms import choose_platform
    from advmd.openmm.reporters import _degrees_of_freedom

    for name, value in (("timestep_fs", timestep_fs), ("duration_ps", duration_ps), ("temperature_k", temperature_k)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if int(report_every) != report_every or report_every < 1:
        raise ValueError(f"report_every must be an integer >= 1, got {report_every!r}")
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtoseconds)
    context = openmm.Context(system, integrator, choose_platform(system, platform or "auto"))
    context.setPositions(positions)
    dof = _degrees_of_freedom(system)
    if _keeps_zero_momentum(system, context):
        dof -= 3  # the momentum-free start stays momentum-free: 3 fewer degrees carry kinetic energy
    context.setVelocities(_initial_velocities(system, temperature_k, int(seed)) * unit.nanometer / unit.picosecond)
    r_gas = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    n_steps = int(round(duration_ps * 1000.0 / timestep_fs))
    n_reports = max(1, n_steps // report_every)
    times, potential, kinetic = [], [], []
    diverged = False
    for k in range(n_reports + 1):
        try:
            if k > 0:
                integrator.step(report_every)
            state = context.getState(energy=True)
        except Exception as error:  # e.g. a model refusing NaN positions: the run diverged
            logger.warning("NVE run stopped at report %d: %s", k, error)
            diverged = True
            break
        pe = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        ke = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not (np.isfinite(pe) and np.isfinite(ke)):
            diverged = True
            break
        times.append(k * report_every * timestep_fs / 1000.0)
        potential.append(pe)
        kinetic.append(ke)
        if 2.0 * ke / (dof * r_gas) > max_temperature_k:
            diverged = True
            break
    del context, integrator
    time_ps = np.array(times)
    pot = np.array(potential)
    kin = np.array(kinetic)
    total = pot + kin
    drift = float(np.polyfit(time_ps, total, 1)[0]) if len(time_ps) >= 2 else float("nan")
    return NVEResult(
        time_ps=time_ps,
        total_energy=total,
        potential_energy=pot,
        kinetic_energy=kin,
        temperature_k=2.0 * kin / (dof * r_gas),
        drift_kj_per_mol_per_ps=drift,
        max_deviation_kj_per_mol=float(np.max(np.abs(total - total[0]))) if len(total) else float("nan"),
        degrees_of_freedom=int(dof),
        diverged=diverged,
        timestep_fs=float(timestep_fs),
    )
