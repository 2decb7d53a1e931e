"""Gradient attacks that maximise committee uncertainty (paper Eq. 10 and 13), batched over seeds.

Eq. 13 is maximised in log space, ``log p(X) + log sigma_F^2(X)`` with
``log p = -E_mean/kT - log Q`` and ``log Q = logsumexp(-E_train/kT)`` (Eq. 11-12) from the
training energies, so no exponential over- or underflows. Eq. 10 maximises
``sigma_F^2`` alone. The attack variable is a Cartesian displacement ``delta`` (S, N, 3)
or a set of dihedral angles (S, K) mapped to coordinates by
:class:`~advmd.attacks.dihedral.DihedralRotation`. All seeds are optimised together in
one batched computation with Adam; seeds never interact, so the result equals attacking
them one at a time.

Units: Angstrom, eV, rad.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from advmd.attacks.dihedral import DihedralRotation

logger = logging.getLogger(__name__)

__all__ = [
    "AttackConfig",
    "AttackResult",
    "attack",
    "log_partition_function",
    "batch_statistics",
    "committee_statistics",
    "random_displacements",
]


@dataclass
class AttackConfig:
    """Settings of :func:`attack` (paper: alanine dipeptide 1000 steps, lr 5e-3, N(0, 0.01 rad), Eq. 10).

    Attributes
    ----------
    steps : int
    learning_rate : float
    init_std : float
        Standard deviation of the initial ``delta`` (Angstrom or rad); 0 gives a deterministic attack.
    kt : float or None, unit eV
        Sampling temperature of Eq. 13; ``None`` maximises Eq. 10 (sigma_F^2 alone).
    log_partition : float
        ``log Q`` of Eq. 11 (see :func:`log_partition_function`); only shifts Eq. 13.
    max_norm : float or None
        Optional bound on each seed's displacement norm (Angstrom, Cartesian attacks).
    seed : int
    """

    steps: int = 1000
    learning_rate: float = 5e-3
    init_std: float = 0.01
    kt: Optional[float] = None
    log_partition: float = 0.0
    max_norm: Optional[float] = None
    seed: int = 0

    def validate(self) -> None:
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"AttackConfig.steps must be a positive integer, got {self.steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"AttackConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if not self.init_std >= 0:
            raise ValueError(f"AttackConfig.init_std must be >= 0, got {self.init_std!r}")
        if self.kt is not None and not (math.isfinite(self.kt) and self.kt > 0):
            raise ValueError(f"AttackConfig.kt must be a temperature > 0 eV (or None for Eq. 10), got {self.kt!r}")
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"AttackConfig.max_norm must be > 0 Angstrom, got {self.max_norm!r}")


@dataclass
class AttackResult:
    """Attacked geometries and their committee statistics (numpy, Angstrom / eV)."""

    positions: np.ndarray  # (S, N, 3)
    delta: np.ndarray  # (S, N, 3) or (S, K)
    mean_energy: np.ndarray  # (S,)
    sigma_f2: np.ndarray  # (S,)
    initial_sigma_f2: np.ndarray  # (S,)
    objective_history: List[float] = field(default_factory=list)


def log_partition_function(train_energies: Sequence[float], kt: float) -> float:
    """``log Q = log sum exp(-E/kT)`` over the training energies (Eq. 11), computed stably."""
    if not (math.isfinite(kt) and kt > 0):
        raise ValueError(f"kt must be > 0 eV, got {kt!r}")
    energies = torch.as_tensor(np.asarray(train_energies, dtype=np.float64))
    if energies.numel() == 0:
        raise ValueError("log_partition_function needs training energies")
    return float(torch.logsumexp(-energies / kt, dim=0))


def batch_statistics(
    committee: torch.nn.Module, numbers: Tensor, positions: Tensor, create_graph: bool = True
) -> Tuple[Tensor, Tensor]:
    """Committee mean energy (S,) and sigma_F^2 (S,; Eq. 7, M-1) for a batch of structures.

    Parameters
    ----------
    committee : SchNetCommittee (anything with ``atomic_energies`` and ``n_members``)
    numbers : Tensor, shape (N,)
    positions : Tensor, shape (S, N, 3), unit Angstrom; must require grad
    create_graph : bool
        Keep the graph so both outputs can be differentiated with respect to ``positions``
        (attacks). ``False`` returns plain values and frees the graph at once.
    """
    s, n = positions.shape[:2]
    m = committee.n_members
    structure_index = torch.arange(s, device=positions.device).repeat_interleave(n)
    member_positions = positions.reshape(s * n, 3).unsqueeze(0).repeat(m, 1, 1)
    atomic = committee.atomic_energies(member_positions, numbers.repeat(s), None, structure_index)
    energies = torch.zeros((m, s), dtype=atomic.dtype, device=atomic.device).index_add_(1, structure_index, atomic)
    (gradient,) = torch.autograd.grad(energies.sum(), member_positions, create_graph=create_graph)
    deviation = gradient - gradient.mean(0)
    per_atom = (deviation * deviation).sum(-1).sum(0)
    sigma_f2 = torch.zeros(s, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, structure_index, per_atom)
    sigma_f2 = sigma_f2 / ((m - 1) * 3 * n)
    if not create_graph:
        return energies.mean(0).detach(), sigma_f2.detach()
    return energies.mean(0), sigma_f2


def _prepare(committee: torch.nn.Module, numbers: Sequence[int], seeds: np.ndarray, variables: Union[str, DihedralRotation]):
    if committee.n_members < 2:
        raise ValueError("attacks need a committee of at least 2 members (sigma_F^2 uses M-1)")
    seeds = np.asarray(seeds, dtype=np.float64)
    if seeds.ndim != 3 or seeds.shape[1:] != (len(numbers), 3):
        raise ValueError(f"seeds must have shape (S, {len(numbers)}, 3), got {seeds.shape}")
    if not np.all(np.isfinite(seeds)):
        raise ValueError("seeds contain NaN or infinite coordinates")
    parameter = next(committee.parameters())
    base = torch.as_tensor(seeds, dtype=parameter.dtype, device=parameter.device)
    z = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=parameter.device)
    s = base.shape[0]
    if isinstance(variables, DihedralRotation):
        shape: Tuple[int, ...] = (s, variables.n_dihedrals)

        def geometry(delta: Tensor) -> Tensor:
            return variables.apply(base, delta)

    elif variables == "cartesian":
        shape = tuple(base.shape)

        def geometry(delta: Tensor) -> Tensor:
            return base + delta

    else:
        raise ValueError(f"variables must be 'cartesian' or a DihedralRotation, got {variables!r}")
    return base, z, shape, geometry


def committee_statistics(
    committee: torch.nn.Module, numbers: Sequence[int], positions: np.ndarray, batch_size: int = 64
) -> Tuple[np.ndarray, np.ndarray]:
    """Committee mean energy (eV) and sigma_F^2 ((eV/Angstrom)^2, Eq. 7, M-1) of structures (S, N, 3) in Angstrom."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise ValueError(f"positions must have shape (S, {len(numbers)}, 3), got {positions.shape}")
    parameter = next(committee.parameters())
    z = torch.as_tensor(np.asarray(numbers), dtype=torch.long, device=parameter.device)
    energies, sigmas = [], []
    for start in range(0, len(positions), batch_size):
        chunk = torch.as_tensor(positions[start : start + batch_size], dtype=parameter.dtype, device=parameter.device)
        with torch.enable_grad():
            energy, sigma_f2 = batch_statistics(committee, z, chunk.requires_grad_(True), create_graph=False)
        energies.append(energy.detach().cpu().numpy())
        sigmas.append(sigma_f2.detach().cpu().numpy())
    if not energies:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(energies).astype(np.float64), np.concatenate(sigmas).astype(np.float64)


def random_displacements(
    committee: torch.nn.Module,
    numbers: Sequence[int],
    seeds: np.ndarray,
    variables: Union[str, DihedralRotation] = "cartesian",
    amplitude: float = 0.1,
    seed: int = 0,
) -> AttackResult:
    """The paper's random baseline: ``delta`` uniform in ``[-amplitude, amplitude]`` per variable.

    ``amplitude`` is in Angstrom per Cartesian coordinate, or in rad per dihedral
    (``pi`` samples the whole circle). The result has the same fields as an
    attack's, so it goes through the same selection.
    """
    if not (math.isfinite(amplitude) and amplitude > 0):
        raise ValueError(f"amplitude must be > 0 (Angstrom or rad), got {amplitude!r}")
    base, _, shape, geometry = _prepare(committee, numbers, seeds, variables)
    generator = torch.Generator().manual_seed(int(seed))
    delta = ((torch.rand(shape, generator=generator, dtype=base.dtype) * 2.0 - 1.0) * amplitude).to(base.device)
    positions = geometry(delta).cpu().numpy()
    _, initial = committee_statistics(committee, numbers, base.cpu().numpy())
    energy, sigma_f2 = committee_statistics(committee, numbers, positions)
    return AttackResult(
        positions=positions.astype(np.float64),
        delta=delta.cpu().numpy(),
        mean_energy=energy,
        sigma_f2=sigma_f2,
        initial_sigma_f2=initial,
    )


def attack(
    committee: torch.nn.Module,
    numbers: Sequence[int],
    seeds: np.ndarray,
    variables: Union[str, DihedralRotation] = "cartesian",
    config: Optional[AttackConfig] = None,
) -> AttackResult:
    """Maximise the adversarial loss from every seed, all seeds in one batch.

    Parameters
    ----------
    committee : SchNetCommittee
    numbers : sequence of int, length N
    seeds : ndarray, shape (S, N, 3), unit Angstrom
    variables : "cartesian" or DihedralRotation
        The attack space: Cartesian displacements, or dihedral angles.
    config : AttackConfig
    """
    config = config or AttackConfig()
    config.validate()
    if config.max_norm is not None and not (isinstance(variables, str) and variables == "cartesian"):
        raise ValueError("AttackConfig.max_norm bounds Cartesian displacements (Angstrom); leave it unset for a dihedral attack")
    base, z, shape, geometry = _prepare(committee, numbers, seeds, variables)
    s = base.shape[0]
    dtype = base.dtype
    generator = torch.Generator().manual_seed(int(config.seed))
    delta = (torch.randn(shape, generator=generator, dtype=dtype) * config.init_std).to(base.device).requires_grad_(True)
    with torch.enable_grad():  # at the seeds themselves, as the random baseline measures it
        _, initial = batch_statistics(committee, z, geometry(torch.zeros_like(delta)).requires_grad_(True), create_graph=False)
    optimizer = torch.optim.Adam([delta], lr=config.learning_rate)
    history: List[float] = []
    # Seeds whose objective or gradient turned non-finite (two atoms made to coincide, an overflow): frozen where
    # they were and reported with a NaN sigma_F^2, which selection drops. Adam is per element, so the other seeds
    # go on exactly as without them.
    failed = torch.zeros(s, dtype=torch.bool, device=base.device)
    per_seed = (s,) + (1,) * (delta.dim() - 1)
    tiny = torch.finfo(dtype).tiny
    for _ in range(int(config.steps)):
        optimizer.zero_grad(set_to_none=True)
        energy, sigma_f2 = batch_statistics(committee, z, geometry(delta))
        if config.kt is None:
            objective = sigma_f2  # Eq. 10
        else:
            # log of Eq. 13; sigma_F^2 = 0 (a committee in full agreement) gives a zero gradient, not log(0)
            objective = -energy / config.kt - config.log_partition + torch.log(sigma_f2.clamp(min=tiny))
        # The gradient with respect to delta alone: a plain backward() would also differentiate the
        # double-backward graph with respect to every committee weight (and leave .grad on them).
        (gradient,) = torch.autograd.grad(-objective.sum(), [delta])
        failed |= ~(torch.isfinite(objective.detach()) & torch.isfinite(gradient).reshape(s, -1).all(1))
        frozen = failed.view(per_seed)
        delta.grad = torch.where(frozen, torch.zeros_like(gradient), gradient)
        kept = delta.detach().clone()
        optimizer.step()
        with torch.no_grad():
            delta.copy_(torch.where(frozen, kept, delta))  # Adam's momentum would still move a frozen seed
        if config.max_norm is not None and variables == "cartesian":
            with torch.no_grad():
                norms = delta.reshape(s, -1).norm(dim=1).clamp(min=1e-12)
                delta.mul_((config.max_norm / norms).clamp(max=1.0).view(s, 1, 1))
        alive = ~failed
        history.append(float(objective.detach()[alive].mean()) if bool(alive.any()) else math.nan)
        # Release this step's graph (the part towards the committee weights was never traversed) before the next.
        del energy, sigma_f2, objective
    final = geometry(delta.detach())
    energy, sigma_f2 = batch_statistics(committee, z, final.clone().requires_grad_(True), create_graph=False)
    if bool(failed.any()):
        logger.warning(
            "%d of %d attack seeds gave a non-finite objective or gradient (e.g. coinciding atoms); they were stopped "
            "and are reported with sigma_f2 = NaN",
            int(failed.sum()),
            s,
        )
        sigma_f2 = sigma_f2.masked_fill(failed, math.nan)
    return AttackResult(
        positions=final.detach().cpu().numpy(),
        delta=delta.detach().cpu().numpy(),
        mean_energy=energy.detach().cpu().numpy(),
        sigma_f2=sigma_f2.detach().cpu().numpy(),
        initial_sigma_f2=initial.detach().cpu().numpy(),
        objective_history=history,
    )
