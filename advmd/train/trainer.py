"""Training a member-batched committee on energies and forces (paper Eq. 3).

All members train at once: every batch is one call of the committee, and
each member's loss is weighted by its own bootstrap counts, so member ``m``
sees its own resample of the training split (paper Algorithm 1, line 3).
Members share no parameter, and Adam is elementwise, so one optimiser over the
summed member losses is exactly ``M`` independent optimisers.

Units: Angstrom, eV, eV/Angstrom.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["StructureSet", "TrainingConfig", "TrainingResult", "train_committee", "fit_reference_energies", "predict"]


@dataclass
class StructureSet:
    """Labelled structures stored as concatenated arrays (structures may differ in size).

    Attributes
    ----------
    numbers : ndarray, shape (A,), int
        Atomic numbers of all atoms of all structures, structure after structure.
    positions : ndarray, shape (A, 3), unit Angstrom
    forces : ndarray, shape (A, 3), unit eV/Angstrom
    energies : ndarray, shape (S,), unit eV
    offsets : ndarray, shape (S + 1,), int
        Structure ``s`` owns atoms ``offsets[s]:offsets[s+1]``.
    """

    numbers: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    energies: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_arrays(
        cls, numbers: Sequence[int], positions: np.ndarray, energies: np.ndarray, forces: np.ndarray
    ) -> "StructureSet":
        """Structures of one composition: positions/forces (S, N, 3), energies (S,), numbers (N,)."""
        positions = np.asarray(positions, dtype=np.float64)
        forces = np.asarray(forces, dtype=np.float64)
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        numbers = np.asarray(numbers, dtype=np.int64)
        if positions.ndim != 3 or positions.shape[2] != 3:
            raise ValueError(f"positions must have shape (S, N, 3), got {positions.shape}")
        s, n = positions.shape[:2]
        if forces.shape != positions.shape:
            raise ValueError(f"forces shape {forces.shape} differs from positions shape {positions.shape}")
        if energies.shape != (s,):
            raise ValueError(f"energies must have shape ({s},) to match positions, got {energies.shape}")
        if numbers.shape != (n,):
            raise ValueError(f"numbers must have shape ({n},) to match positions, got {numbers.shape}")
        return cls(np.tile(numbers, s), positions.reshape(-1, 3), forces.reshape(-1, 3), energies, np.arange(s + 1) * n)

    def __len__(self) -> int:
        return len(self.energies)

    def subset(self, indices: Sequence[int]) -> "StructureSet":
        indices = np.asarray(indices, dtype=np.int64)
        atoms = (
            np.concatenate([np.arange(self.offsets[k], self.offsets[k + 1]) for k in indices])
            if len(indices)
            else np.zeros(0, np.int64)
        )
        sizes = self.offsets[indices + 1] - self.offsets[indices]
        return StructureSet(
            self.numbers[atoms],
            self.positions[atoms],
            self.forces[atoms],
            self.energies[indices],
            np.concatenate([[0], np.cumsum(sizes)]),
        )

    def batch(self, indices: Sequence[int], dtype: torch.dtype) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(numbers, positions, structure_index, energies, forces) tensors for some structures."""
        part = self.subset(indices)
        structure_index = np.repeat(np.arange(len(part)), np.diff(part.offsets))
        return (
            torch.as_tensor(part.numbers),
            torch.as_tensor(part.positions, dtype=dtype),
            torch.as_tensor(structure_index),
            torch.as_tensor(part.energies, dtype=dtype),
            torch.as_tensor(part.forces, dtype=dtype),
        )


@dataclass
class TrainingConfig:
    """Settings of :func:`train_committee` (defaults suit small molecules on a CPU)."""

    epochs: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    energy_weight: float = 1.0  # alpha_E of paper Eq. 3
    force_weight: float = 1.0  # alpha_F of paper Eq. 3
    validation_fraction: float = 0.2
    bootstrap: bool = True
    lr_factor: float = 0.5
    lr_patience: int = 15
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 40
    seed: int = 0

    def validate(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1),
            ("batch_size", self.batch_size >= 1),
            ("learning_rate", self.learning_rate > 0),
            ("energy_weight", self.energy_weight >= 0),
            ("force_weight", self.force_weight >= 0),
            ("validation_fraction", 0 < self.validation_fraction < 1),
            ("lr_factor", 0 < self.lr_factor < 1),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"TrainingConfig.{name} = {getattr(self, name)!r} is out of range")
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("TrainingConfig: energy_weight and force_weight cannot both be 0")


@dataclass
class TrainingResult:
    """What :func:`train_committee` measured (units eV and eV/Angstrom)."""

    epochs_run: int
    best_epoch: int
    seconds: float
    structures_per_second: float
    validation_energy_rmse: List[float]  # per member
    validation_force_rmse: List[float]  # per member
    validation_mean_energy_rmse: float  # committee mean
    validation_mean_force_rmse: float
    history: List[Dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def fit_reference_energies(data: StructureSet, species: Sequence[int]) -> np.ndarray:
    """Per-species reference energies (eV) by least squares on composition counts.

    Targets minus ``sum_i e[Z_i]`` are then centred near zero, so the network
    fits only the conformational part (well-conditioned training).
    """
    species = list(species)
    index = {z: k for k, z in enumerate(species)}
    unknown = sorted(set(int(z) for z in np.unique(data.numbers)) - set(index))
    if unknown:
        raise ValueError(f"training data contains elements Z={unknown} that the committee's species {species} lack")
    counts = np.zeros((len(data), len(species)))
    for s in range(len(data)):
        for z in data.numbers[data.offsets[s] : data.offsets[s + 1]]:
            counts[s, index[int(z)]] += 1
    # Minimum-norm solution: with one composition only the total is determined, spread over species.
    shifts, *_ = np.linalg.lstsq(counts, data.energies, rcond=None)
    return shifts


def _member_outputs(
    committee: torch.nn.Module, numbers: Tensor, positions: Tensor, structure_index: Tensor, n_structures: int, create_graph: bool
) -> Tuple[Tensor, Tensor]:
    m = committee.n_members
    member_positions = positions.unsqueeze(0).repeat(m, 1, 1).requires_grad_(True)
    atomic = committee.atomic_energies(member_positions, numbers, None, structure_index)
    energies = torch.zeros((m, n_structures), dtype=atomic.dtype).index_add_(1, structure_index, atomic)
    (gradient,) = torch.autograd.grad(energies.sum(), member_positions, create_graph=create_graph)
    return energies, -gradient


def predict(committee: torch.nn.Module, data: StructureSet, batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """Member energies (M, S) and forces (M, A, 3) for every structure of ``data``."""
    dtype = next(committee.parameters()).dtype
    energies, forces = [], []
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        numbers, positions, structure_index, _, _ = data.batch(idx, dtype)
        e, f = _member_outputs(committee, numbers, positions, structure_index, len(idx), False)
        energies.append(e.detach().numpy())
        forces.append(f.detach().numpy())
    return np.concatenate(energies, axis=1), np.concatenate(forces, axis=1)


def _losses(
    committee, data: StructureSet, idx: np.ndarray, weights: Tensor, config: TrainingConfig, create_graph: bool
) -> Tensor:
    dtype = next(committee.parameters()).dtype
    numbers, positions, structure_index, energies, forces = data.batch(idx, dtype)
    pred_e, pred_f = _member_outputs(committee, numbers, positions, structure_index, len(idx), create_graph)
    energy_se = (pred_e - energies) ** 2  # (M, B)
    atom_se = ((pred_f - forces) ** 2).sum(-1)  # (M, A)
    n_atoms = torch.as_tensor(np.diff(data.offsets)[idx], dtype=dtype)
    force_se = torch.zeros_like(energy_se).index_add_(1, structure_index, atom_se) / (3.0 * n_atoms)
    per_structure = config.energy_weight * energy_se + config.force_weight * force_se
    total_weight = weights.sum(1).clamp(min=1e-12)
    return (weights * per_structure).sum(1) / total_weight  # (M,)


def train_committee(
    committee: torch.nn.Module,
    data: StructureSet,
    config: Optional[TrainingConfig] = None,
    validation: Optional[StructureSet] = None,
) -> TrainingResult:
    """Train every member of a :class:`~advmd.committee.SchNetCommittee` in place.

    Parameters
    ----------
    committee : SchNetCommittee
    data : StructureSet
        Training structures; a validation split is drawn from them unless
        ``validation`` is given.
    config : TrainingConfig, optional
    validation : StructureSet, optional

    Returns
    -------
    TrainingResult
        The committee is left at its best validation epoch.
    """
    config = config or TrainingConfig()
    config.validate()
    if len(data) < 2:
        raise ValueError(f"training needs at least 2 structures, got {len(data)}")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    if validation is None:
        order = rng.permutation(len(data))
        n_val = max(1, int(round(config.validation_fraction * len(data))))
        validation = data.subset(order[:n_val])
        data = data.subset(order[n_val:])
    m = committee.n_members
    dtype = next(committee.parameters()).dtype

    with torch.no_grad():
        shifts = fit_reference_energies(data, committee.species)
        committee.atomic_energy_shift.copy_(torch.as_tensor(shifts, dtype=dtype))
        committee.energy_scale.fill_(float(np.sqrt(np.mean(data.forces**2))) or 1.0)

    if config.bootstrap:
        counts = np.stack([np.bincount(rng.integers(0, len(data), len(data)), minlength=len(data)) for _ in range(m)])
    else:
        counts = np.ones((m, len(data)))
    counts_t = torch.as_tensor(counts, dtype=dtype)
    val_weights = torch.ones((m, len(validation)), dtype=dtype)

    optimizer = torch.optim.Adam(committee.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_learning_rate
    )
    best_loss, best_epoch, best_state = math.inf, -1, copy.deepcopy(committee.state_dict())
    history: List[Dict[str, float]] = []
    start = time.perf_counter()
    seen = 0
    epoch = 0
    for epoch in range(config.epochs):
        committee.train()
        order = rng.permutation(len(data))
        train_loss = 0.0
        for b in range(0, len(order), config.batch_size):
            idx = order[b : b + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = _losses(committee, data, idx, counts_t[:, idx], config, True)
            loss.sum().backward()
            optimizer.step()
            train_loss += float(loss.detach().mean()) * len(idx)
            seen += len(idx)
        committee.eval()
        val_loss = 0.0
        for b in range(0, len(validation), 64):
            idx = np.arange(b, min(b + 64, len(validation)))
            val_loss += float(_losses(committee, validation, idx, val_weights[:, idx], config, False).mean().detach()) * len(idx)
        val_loss /= len(validation)
        scheduler.step(val_loss)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss / len(data),
                "validation_loss": val_loss,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(committee.state_dict())
        if epoch % 10 == 0 or epoch == config.epochs - 1:
            logger.info(
                "epoch %d train %.5f validation %.5f lr %.1e",
                epoch,
                train_loss / len(data),
                val_loss,
                optimizer.param_groups[0]["lr"],
            )
        if epoch - best_epoch >= config.early_stopping_patience:
            logger.info("early stop at epoch %d (best %d)", epoch, best_epoch)
            break
    seconds = time.perf_counter() - start
    committee.load_state_dict(best_state)
    committee.eval()

    energies, forces = predict(committee, validation)
    e_err = energies - validation.energies
    f_err = forces - validation.forces
    mean_e_err = energies.mean(0) - validation.energies
    mean_f_err = forces.mean(0) - validation.forces
    return TrainingResult(
        epochs_run=epoch + 1,
        best_epoch=best_epoch,
        seconds=seconds,
        structures_per_second=seen / seconds if seconds > 0 else float("nan"),
        validation_energy_rmse=[float(v) for v in np.sqrt((e_err**2).mean(1))],
        validation_force_rmse=[float(v) for v in np.sqrt((f_err**2).reshape(m, -1).mean(1))],
        validation_mean_energy_rmse=float(np.sqrt((mean_e_err**2).mean())),
        validation_mean_force_rmse=float(np.sqrt((mean_f_err**2).mean())),
        history=history,
    )
