"""Many independent Langevin replicas of a small molecule in one batched model evaluation.

For a molecule of a few atoms, one committee evaluation costs the same for one replica as
for a hundred: the time goes into per-call overhead, not arithmetic. The paper's stability
test (hundreds of 5 ps trajectories of ammonia) is therefore run here as a batch: every
step evaluates all live replicas together, and a replica that fails a check is frozen and
leaves the batch. OpenMM remains the engine for production MD (:mod:`advmd.md.runner`);
this engine is for ensembles of short runs of one small molecule.

The integrator is BAOAB Langevin (the splitting of OpenMM's ``LangevinMiddleIntegrator``);
with zero friction it is velocity Verlet. Units follow ASE: Angstrom, eV, amu, and the
time unit Angstrom * sqrt(amu / eV) internally; arguments are in fs, ps^-1 and K.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from advmd.md.stability import Checker, Frame, check_all

__all__ = ["ReplicaResult", "run_replicas", "committee_energy_function"]


@dataclass
class ReplicaResult:
    """Outcome of :func:`run_replicas`, one entry per replica.

    stable : list of bool
    failure_step : list of int (-1 for stable replicas)
    reasons : list of str ("" for stable replicas)
    positions : ndarray (S, N, 3), Angstrom: the last positions (the failing frame for failed replicas)
    velocities : ndarray (S, N, 3), Angstrom/fs
    """

    stable: List[bool]
    failure_step: List[int]
    reasons: List[str]
    positions: np.ndarray
    velocities: np.ndarray


def committee_energy_function(committee: torch.nn.Module, numbers: Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Committee mean energy (S,) in eV of a batch of structures (S, N, 3) in Angstrom, differentiable.

    ``committee`` is a trainable advmd committee (see
    :func:`advmd.committee.load_trainable_committee`).
    """
    parameter = next(committee.parameters())
    z = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=parameter.device)
    m = committee.n_members

    def energy(positions: torch.Tensor) -> torch.Tensor:
        s, n = positions.shape[:2]
        index = torch.arange(s, device=positions.device).repeat_interleave(n)
        member_positions = positions.to(parameter.dtype).reshape(s * n, 3).unsqueeze(0).expand(m, s * n, 3)
        atomic = committee.atomic_energies(member_positions, z.repeat(s), None, index)
        energies = torch.zeros((m, s), dtype=atomic.dtype, device=atomic.device).index_add_(1, index, atomic)
        return energies.mean(0).to(positions.dtype)

    return energy


def _forces(energy_fn: Callable[[torch.Tensor], torch.Tensor], positions: torch.Tensor):
    x = positions.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = energy_fn(x)
        (gradient,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), -gradient.detach()


def run_replicas(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    masses_amu: Sequence[float],
    positions_angstrom: np.ndarray,
    temperatures_k: Sequence[float],
    steps: int,
    timestep_fs: float = 0.5,
    friction_per_ps: float = 1.0,
    checkers: Sequence[Checker] = (),
    check_interval: int = 20,
    seed: int = 0,
    velocities: Optional[np.ndarray] = None,
) -> ReplicaResult:
    """Integrate S independent replicas with BAOAB Langevin; stop each at its first failed check.

    Parameters
    ----------
    energy_fn : callable
        Maps positions (S, N, 3) float64 Angstrom to energies (S,) eV, differentiably.
    masses_amu : (N,) atomic masses
    positions_angstrom : (N, 3) start of every replica, or (S, N, 3)
    temperatures_k : (S,) one bath temperature per replica; also sets initial velocities
    steps : int
    friction_per_ps : float
        Langevin friction; 0 gives velocity Verlet (NVE).
    checkers : stability checks (:mod:`advmd.md.stability`), run every ``check_interval`` steps
    seed : int
        Seeds the initial velocities and the thermostat noise.
    velocities : optional (S, N, 3) Angstrom/fs start velocities (default: Maxwell-Boltzmann
        at each replica's temperature, zero net momentum)
    """
    from ase import units as ase_units

    temperatures = np.asarray(temperatures_k, dtype=np.float64)
    s = len(temperatures)
    masses = np.asarray(masses_amu, dtype=np.float64)
    n = len(masses)
    start = np.asarray(positions_angstrom, dtype=np.float64)
    if start.shape == (n, 3):
        start = np.repeat(start[None], s, axis=0)
    if start.shape != (s, n, 3):
        raise ValueError(f"positions_angstrom must have shape ({n}, 3) or ({s}, {n}, 3), got {start.shape}")
    if s < 1 or np.any(temperatures < 0) or not np.all(np.isfinite(temperatures)):
        raise ValueError(f"temperatures_k must list one finite temperature >= 0 per replica, got {temperatures_k!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not timestep_fs > 0 or not friction_per_ps >= 0:
        raise ValueError(f"timestep_fs must be > 0 and friction_per_ps >= 0, got {timestep_fs!r}, {friction_per_ps!r}")
    if int(check_interval) != check_interval or check_interval < 1:
        raise ValueError(f"check_interval must be a positive integer, got {check_interval!r}")

    generator = torch.Generator().manual_seed(int(seed))
    dtype = torch.float64
    dt = float(timestep_fs) * ase_units.fs  # ASE time units
    gamma = float(friction_per_ps) / (1000.0 * ase_units.fs)
    kt = torch.tensor(temperatures * ase_units.kB, dtype=dtype)[:, None, None]  # eV
    m = torch.tensor(masses, dtype=dtype)[None, :, None]
    x = torch.tensor(start, dtype=dtype)
    if velocities is None:
        v = torch.randn((s, n, 3), generator=generator, dtype=dtype) * torch.sqrt(kt / m)
        if n > 1:  # no net momentum, then rescale to the exact kinetic temperature of 3N - 3 degrees of freedom
            v = v - (m * v).sum(1, keepdim=True) / m.sum()
            kinetic = 0.5 * (m * v * v).sum((1, 2), keepdim=True)
            target = 0.5 * (3 * n - 3) * kt
            v = torch.where(kinetic > 0, v * torch.sqrt(target / kinetic.clamp_min(1e-300)), v)
    else:
        # A/fs -> A per ASE time unit: one fs is ase_units.fs time units, so 1 A/fs = 1/ase_units.fs A/unit.
        v = torch.tensor(np.asarray(velocities, dtype=np.float64), dtype=dtype) / ase_units.fs
        if v.shape != (s, n, 3):
            raise ValueError(f"velocities must have shape ({s}, {n}, 3), got {tuple(v.shape)}")
    c1 = math.exp(-gamma * dt)
    c2 = math.sqrt(max(0.0, 1.0 - c1 * c1))
    noise_scale = torch.sqrt(kt / m) * c2

    # Degrees of freedom of the kinetic temperature: without friction (NVE) the momentum-free start stays so.
    dof = 3 * n - 3 if (gamma == 0 and n > 1) else 3 * n
    # Each replica its own checkers: some keep a history (the temperature window).
    replica_checkers = [copy.deepcopy(list(checkers)) for _ in range(s)]
    active = torch.arange(s)
    stable = [True] * s
    failure_step = [-1] * s
    reasons = [""] * s
    energy, force = _forces(energy_fn, x)
    step = 0
    while step < int(steps) and len(active):
        xa, va, fa = x[active], v[active], force
        for _ in range(min(int(check_interval), int(steps) - step)):
            va = va + 0.5 * dt * fa / m
            xa = xa + 0.5 * dt * va
            if gamma > 0:
                va = c1 * va + noise_scale[active] * torch.randn(va.shape, generator=generator, dtype=dtype)
            xa = xa + 0.5 * dt * va
            energy_a, fa = _forces(energy_fn, xa)
            va = va + 0.5 * dt * fa / m
            step += 1
            if not torch.isfinite(energy_a).all():
                break
        x[active], v[active] = xa, va
        finite = torch.isfinite(xa).all(2).all(1) & torch.isfinite(energy_a)
        keep = []
        for row, replica in enumerate(active.tolist()):
            failed = [] if bool(finite[row]) else ["finite: non-finite positions or energy"]
            if checkers and not failed:
                kinetic = 0.5 * float((m[0] * va[row] * va[row]).sum())
                frame = Frame(
                    step=step,
                    time_ps=step * float(timestep_fs) / 1000.0,
                    positions=xa[row].numpy(),
                    potential_energy=float(energy_a[row]),
                    temperature=2.0 * kinetic / (dof * ase_units.kB),
                )
                failed = check_all(replica_checkers[replica], frame)
            if failed:
                stable[replica], failure_step[replica], reasons[replica] = False, step, "; ".join(failed)
            else:
                keep.append(row)
        keep_index = torch.tensor(keep, dtype=torch.long)
        active, force = active[keep_index], fa[keep_index]
    return ReplicaResult(
        stable=stable,
        failure_step=failure_step,
        reasons=reasons,
        positions=x.numpy(),
        velocities=(v * ase_units.fs).numpy(),  # A/fs
    )
