"""Training a member-batched committee on energies and forces (paper Eq. 3).

All members train at once: every batch is one call of the committee, and
each member's loss is weighted by its own bootstrap counts, so member ``m``
sees its own resample of the training split (paper Algorithm 1, line 3).
Members share no parameter, and Adam is elementwise, so one optimiser over the
summed member losses steps every member as its own optimiser would. Each member
keeps the weights of its own best validation epoch. The learning-rate schedule
(reduce on plateau) and the early stop follow the committee's mean validation
loss: members share them. Schedules per member were tried: on small validation
sets, a member whose loss is noisy in the first epochs had its learning rate cut
to the minimum and never learned (the double-well loop's committee kept a member
at its initial weights). With a fixed schedule, member ``m`` trained inside the
committee ends with the weights training it alone gives (same data order).

Units: Angstrom, eV, eV/Angstrom.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from advmd._io import durable_replace

logger = logging.getLogger(__name__)

__all__ = [
    "StructureSet",
    "TrainingConfig",
    "TrainingResult",
    "train_committee",
    "fit_reference_energies",
    "align_reference_energies",
    "predict",
    "evaluate",
    "calibrate_threshold",
]


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
    # alpha_F of paper Eq. 3. Convention: the squared force error of a structure is averaged over its 3N
    # components (Eq. 3 sums them), so that the weight does not scale with the molecule's size; a weight
    # written for the summed form equals this one times 3N.
    force_weight: float = 1.0
    validation_fraction: float = 0.2
    bootstrap: bool = True
    lr_factor: float = 0.5
    lr_patience: int = 15
    min_learning_rate: float = 1e-5
    early_stopping_patience: int = 40
    fine_tune: bool = False  # keep the committee's weights and reference energies (previous generation)
    checkpoint_every: int = 1  # epochs between checkpoints (when a checkpoint path is given)
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
    """What :func:`train_committee` measured (units eV and eV/Angstrom).

    ``best_epoch`` is the epoch of the best mean validation loss (the early stop counts from it);
    ``best_epochs`` lists the epoch whose weights each member kept (its own best validation loss).
    """

    epochs_run: int
    best_epoch: int
    seconds: float
    structures_per_second: float
    validation_energy_rmse: List[float]  # per member
    validation_force_rmse: List[float]  # per member
    validation_mean_energy_rmse: float  # committee mean
    validation_mean_force_rmse: float
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_epochs: List[int] = field(default_factory=list)

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


def align_reference_energies(committee: torch.nn.Module, data: StructureSet) -> np.ndarray:
    """Move a trained committee's per-species reference energies onto the energy zero of ``data``'s labels.

    For fine-tuning a committee on labels of another reference method: two methods' zeros differ per atom
    (hundreds of eV between a force field and xTB), which fine-tuning at a small learning rate never closes.
    The offsets are the least-squares per-species fit of the labels minus the committee's mean prediction; the
    weights, hence forces, are untouched. Returns the offsets added (eV, in ``committee.species`` order).
    """
    member_energies, _ = predict(committee, data)
    residual = dataclasses.replace(data, energies=data.energies - member_energies.mean(0))
    offsets = fit_reference_energies(residual, committee.species)
    with torch.no_grad():
        shift = committee.atomic_energy_shift
        shift.add_(torch.as_tensor(offsets, dtype=shift.dtype, device=shift.device))
    return offsets


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
    # Divided by the batch size, not by the batch's summed bootstrap counts: over random batches this averages to
    # member m's bootstrap loss (1/N) sum_s c_ms L_s (the counts sum to N). The counts' own sum would cancel them
    # (with batches of one, a structure drawn three times would weigh as much as one drawn once).
    return (weights * per_structure).sum(1) / len(idx)  # (M,)


def _fingerprint(committee: torch.nn.Module, data: StructureSet, validation: StructureSet, config: TrainingConfig) -> str:
    """Hash of what a resumed run must share with the run that wrote the checkpoint: data, settings and architecture
    (a checkpoint's weights loaded into a committee of another cutoff would make a hybrid of the two)."""
    import hashlib

    digest = hashlib.sha256()
    for part in (data.numbers, data.positions, data.energies, data.forces, validation.energies, validation.positions):
        digest.update(np.ascontiguousarray(part).tobytes())
    fields = (
        "batch_size",
        "learning_rate",
        "energy_weight",
        "force_weight",
        "bootstrap",
        "seed",
        "fine_tune",
        "lr_factor",
        "lr_patience",
        "min_learning_rate",
    )  # not epochs
    digest.update(repr([getattr(config, f) for f in fields]).encode())
    hyper = committee.hyperparameters() if hasattr(committee, "hyperparameters") else {}
    digest.update(repr((type(committee).__name__, sorted(hyper.items()))).encode())
    return digest.hexdigest()


def _save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    durable_replace(tmp, path)  # a kill or crash never leaves half a checkpoint


def train_committee(
    committee: torch.nn.Module,
    data: StructureSet,
    config: Optional[TrainingConfig] = None,
    validation: Optional[StructureSet] = None,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    on_epoch_end: Optional[Callable[[int], None]] = None,
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
    checkpoint : path, optional
        Checkpoint file, written atomically every ``config.checkpoint_every``
        epochs. If it exists, training resumes from it and ends exactly as an
        uninterrupted run would.
    on_epoch_end : callable, optional
        Called with the epoch index after each epoch (and its checkpoint).

    Returns
    -------
    TrainingResult
        The committee is left at its best validation epoch.
    """
    config = config or TrainingConfig()
    config.validate()
    if getattr(committee, "uses_tables", False):
        raise ValueError(
            "train_committee: this committee is a tabulated inference copy (frozen weights, filters from tables); "
            "train the exact committee (e.g. from advmd.committee.load_trainable_committee) and tabulate after"
        )
    if len(data) < 2:
        raise ValueError(f"training needs at least 2 structures, got {len(data)}")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    if validation is None:
        order = rng.permutation(len(data))
        n_val = max(1, int(round(config.validation_fraction * len(data))))
        validation = data.subset(order[:n_val])
        data = data.subset(order[n_val:])
    if len(validation) < 1:
        raise ValueError("the validation set is empty")
    m = committee.n_members
    dtype = next(committee.parameters()).dtype

    if not config.fine_tune:
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
    if not hasattr(committee, "member_axes"):
        raise TypeError(
            f"train_committee needs a committee that names its parameters' member axes; {type(committee).__name__} does not"
        )
    axes = committee.member_axes()
    best_loss, best_epoch, best_state = math.inf, -1, copy.deepcopy(committee.state_dict())
    member_best_loss, member_best_epoch = np.full(m, math.inf), np.full(m, -1)
    history: List[Dict[str, Any]] = []
    seen, elapsed, first_epoch = 0, 0.0, 0
    checkpoint_path = Path(checkpoint) if checkpoint is not None else None
    fingerprint = _fingerprint(committee, data, validation, config)
    if checkpoint_path is not None and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=False)
        if state["n_train"] != len(data) or state["n_members"] != m:
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} was written for {state['n_train']} training structures and "
                f"M={state['n_members']}, not {len(data)} and M={m}; delete it to start over"
            )
        if state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} was written for other data, settings or model (structures, labels, "
                "seed, batch size, learning rate and its schedule, loss weights, bootstrap, architecture); delete it to "
                "start over"
            )
        committee.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["rng"]
        if "member_best_loss" not in state:
            raise ValueError(
                f"checkpoint {str(checkpoint_path)!r} was written by an older advmd (one best epoch for all members); "
                "delete it to start over"
            )
        best_loss, best_epoch, best_state = state["best_loss"], state["best_epoch"], state["best_state"]
        member_best_loss, member_best_epoch = state["member_best_loss"], state["member_best_epoch"]
        history, seen, elapsed, first_epoch = state["history"], state["seen"], state["elapsed"], state["epoch"] + 1
        logger.info("resuming from %s at epoch %d", checkpoint_path, first_epoch)

    start = time.perf_counter() - elapsed
    epochs_run = first_epoch
    for epoch in range(first_epoch, config.epochs):
        if epoch - best_epoch > config.early_stopping_patience:
            break
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
        member_val = np.zeros(m)
        for b in range(0, len(validation), 64):
            idx = np.arange(b, min(b + 64, len(validation)))
            losses = _losses(committee, validation, idx, val_weights[:, idx], config, False).detach()
            member_val += losses.cpu().numpy().astype(np.float64) * len(idx)
        member_val /= len(validation)
        val_loss = float(member_val.mean())
        scheduler.step(val_loss)
        lr = optimizer.param_groups[0]["lr"]
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss / len(data),
                "validation_loss": val_loss,
                "member_validation_loss": member_val.tolist(),
                "lr": lr,
            }
        )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
        improved = np.flatnonzero(member_val < member_best_loss)
        if len(improved):  # each member keeps its own best epoch's weights
            member_best_loss[improved], member_best_epoch[improved] = member_val[improved], epoch
            index = torch.as_tensor(improved, dtype=torch.long)
            current = committee.state_dict()
            with torch.no_grad():
                for name, axis in axes.items():
                    best_state[name].index_copy_(axis, index, current[name].index_select(axis, index))
        if epoch % 10 == 0 or epoch == config.epochs - 1:
            logger.info("epoch %d train %.5f validation %.5f lr %.1e", epoch, train_loss / len(data), val_loss, lr)
        if checkpoint_path is not None and ((epoch + 1) % config.checkpoint_every == 0 or epoch == config.epochs - 1):
            payload = {
                "epoch": epoch,
                "model": committee.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng.bit_generator.state,
                "best_loss": best_loss,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "member_best_loss": member_best_loss,
                "member_best_epoch": member_best_epoch,
                "history": history,
                "seen": seen,
                "elapsed": time.perf_counter() - start,
                "n_train": len(data),
                "n_members": m,
                "fingerprint": fingerprint,
            }
            _save_checkpoint(checkpoint_path, payload)
        epochs_run = epoch + 1
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    seconds = time.perf_counter() - start
    committee.load_state_dict(best_state)
    committee.eval()

    metrics = evaluate(committee, validation)
    return TrainingResult(
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        seconds=seconds,
        structures_per_second=seen / seconds if seconds > 0 else float("nan"),
        validation_energy_rmse=metrics["member_energy_rmse"],
        validation_force_rmse=metrics["member_force_rmse"],
        validation_mean_energy_rmse=metrics["mean_energy_rmse"],
        validation_mean_force_rmse=metrics["mean_force_rmse"],
        history=history,
        best_epochs=[int(e) for e in member_best_epoch],
    )


def evaluate(committee: torch.nn.Module, data: StructureSet) -> Dict[str, Any]:
    """Energy and force RMSE and MAE per member and for the committee mean.

    Returns
    -------
    dict
        ``member_energy_rmse``, ``member_energy_mae`` (eV, lists of M),
        ``member_force_rmse``, ``member_force_mae`` (eV/Angstrom, lists of M),
        ``mean_energy_rmse``, ``mean_energy_mae``, ``mean_force_rmse``,
        ``mean_force_mae`` (committee mean), and ``n_structures``.
    """
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty set of structures")
    energies, forces = predict(committee, data)
    m = energies.shape[0]
    e_err = energies - data.energies
    f_err = (forces - data.forces).reshape(m, -1)
    mean_e = energies.mean(0) - data.energies
    mean_f = (forces.mean(0) - data.forces).reshape(-1)
    return {
        "n_structures": len(data),
        "member_energy_rmse": [float(v) for v in np.sqrt((e_err**2).mean(1))],
        "member_energy_mae": [float(v) for v in np.abs(e_err).mean(1)],
        "member_force_rmse": [float(v) for v in np.sqrt((f_err**2).mean(1))],
        "member_force_mae": [float(v) for v in np.abs(f_err).mean(1)],
        "mean_energy_rmse": float(np.sqrt((mean_e**2).mean())),
        "mean_energy_mae": float(np.abs(mean_e).mean()),
        "mean_force_rmse": float(np.sqrt((mean_f**2).mean())),
        "mean_force_mae": float(np.abs(mean_f).mean()),
    }


def calibrate_threshold(committee: torch.nn.Module, data: StructureSet, percentile: float = 80.0) -> Dict[str, float]:
    """Uncertainty threshold ``t`` of paper Eq. 8 from the training set.

    ``t`` is the given percentile of the per-structure force variance
    ``sigma_F^2`` (Eq. 7, divisor M-1) over ``data``; structures above it are
    "not known" to the committee. The paper's double-well runs use the 80th
    percentile.

    Returns
    -------
    dict
        ``{"sigma_f2": t ((eV/Angstrom)^2), "percentile": p, "n_structures": S}``
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    if committee.n_members < 2:
        raise ValueError("calibration needs a committee of at least 2 members")
    _, forces = predict(committee, data)
    sizes = np.diff(data.offsets)
    deviation_sq = ((forces - forces.mean(0)) ** 2).sum(axis=(0, 2)) / (committee.n_members - 1)  # (A,)
    per_structure = np.add.reduceat(deviation_sq, data.offsets[:-1]) / (3 * sizes)
    return {
        "sigma_f2": float(np.percentile(per_structure, percentile)),
        "percentile": float(percentile),
        "n_structures": len(data),
    }
