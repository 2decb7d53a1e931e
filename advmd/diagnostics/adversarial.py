"""Adversarial directions of an approximate energy model (seed 000).

For an accurate (reference) model and an approximate one, the squared energy error
``L(R) = (E_acc(R) - E_app(R))^2`` grows fastest along

``A(R) = grad_R L = 2 (E_acc - E_app) (F_app - F_acc)``

(forces are minus gradients). Where the reference force is small, near the minima
that thermal sampling visits most, ``A ~ 2 (E_acc - E_app) F_app``: it points along the
model's own force wherever the model underestimates the energy (``E_acc > E_app``), and
then following the model (MD, relaxation) walks into its own error. A positive
``cos(A, F_app)`` marks exactly those structures: a descent step with the model raises
the squared error. The diagnostics here:

* :func:`adversarial_direction` and :func:`force_cosine`, the two formulas;
* :func:`adversarial_directions`, the cosine between ``A`` and ``F_app`` for a set
  of structures, with the energy above the reference minimum;
* :func:`relaxation_error_growth`, the energy error after each of ``k`` steepest-
  descent steps taken with the approximate model's forces.

Both models are :class:`~advmd.labelers.Labeler` objects, so the approximate model
may be an advmd committee (:func:`advmd.diagnostics.committee_labeler`) or another
reference method (amber14 approximating GFN2-xTB, as the seed compares BKS with DFT).

Units: Angstrom, eV, eV/Angstrom. ``A`` has units of eV^2/Angstrom.

Energy offset. Two methods rarely share an energy zero (a force field and xTB differ
by thousands of eV). A constant offset carries no physics but enters ``A`` as a
scalar factor, so by default the mean error over the structures is removed first
(``align="mean"``, the least-squares constant); ``align="none"`` keeps raw energies,
as for a model trained on the reference. The zeros differ per atom, not by one constant,
so ``align="mean"`` refuses structures of different compositions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "AdversarialResult",
    "RelaxationResult",
    "adversarial_direction",
    "adversarial_directions",
    "force_cosine",
    "label_or_raise",
    "relaxation_error_growth",
]

ALIGN_CHOICES = ("mean", "none")


def adversarial_direction(
    reference_energy: float, reference_forces: np.ndarray, approximate_energy: float, approximate_forces: np.ndarray
) -> np.ndarray:
    """``A = 2 (E_acc - E_app)(F_app - F_acc)``, the gradient of the squared energy error.

    Parameters
    ----------
    reference_energy, approximate_energy : float, unit eV
    reference_forces, approximate_forces : ndarray, shape (N, 3), unit eV/Angstrom

    Returns
    -------
    ndarray, shape (N, 3), unit eV^2/Angstrom
        Zero where the models agree in energy or in forces.
    """
    f_acc = np.asarray(reference_forces, dtype=np.float64)
    f_app = np.asarray(approximate_forces, dtype=np.float64)
    if f_acc.shape != f_app.shape:
        raise ValueError(
            f"reference forces have shape {f_acc.shape} but approximate forces {f_app.shape}; give the same structure"
        )
    return 2.0 * (float(reference_energy) - float(approximate_energy)) * (f_app - f_acc)


def force_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two 3N vectors; NaN (without a division by zero) if either is zero.

    A zero vector has no direction, so the cosine is undefined: NaN marks it and the
    summaries below leave such structures out (and count them).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    norm_a = float(np.linalg.norm(a))
    norm_b = float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0 or not (np.isfinite(norm_a) and np.isfinite(norm_b)):
        return float("nan")
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


@dataclass
class AdversarialResult:
    """Per-structure adversarial-direction statistics.

    Attributes
    ----------
    energy_error : ndarray (S,), eV
        ``E_acc - E_app - offset``.
    offset : float, eV
        The constant removed from the energy difference (0 with ``align="none"``).
    cosine : ndarray (S,)
        ``cos(A, F_app)``; NaN where ``A`` or ``F_app`` is zero.
    direction_norm : ndarray (S,), eV^2/Angstrom
        ``|A|``.
    force_error : ndarray (S,), eV/Angstrom
        RMS over components of ``F_app - F_acc``.
    energy_above_minimum : ndarray (S,), eV
        Reference energy above the lowest reference energy of the set.
    """

    energy_error: np.ndarray
    offset: float
    cosine: np.ndarray
    direction_norm: np.ndarray
    force_error: np.ndarray
    energy_above_minimum: np.ndarray
    directions: List[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def defined(self) -> np.ndarray:
        """Mask of structures whose cosine is defined."""
        return np.isfinite(self.cosine)

    def summary(self) -> Dict[str, Any]:
        """JSON-ready summary: cosine quantiles, the fraction with cos > 0.5, error RMS."""
        cos = self.cosine[self.defined]
        out: Dict[str, Any] = {
            "structures": int(len(self.cosine)),
            "undefined_cosine": int((~self.defined).sum()),
            "energy_offset_ev": float(self.offset),
            "energy_rmse_ev": float(np.sqrt(np.mean(self.energy_error**2))) if len(self.energy_error) else float("nan"),
            "force_rmse_ev_per_angstrom": float(np.sqrt(np.mean(self.force_error**2))) if len(self.force_error) else float("nan"),
        }
        if len(cos):
            q25, q50, q75 = np.percentile(cos, [25, 50, 75])
            out.update(
                cosine_median=float(q50),
                cosine_q25=float(q25),
                cosine_q75=float(q75),
                cosine_mean=float(cos.mean()),
                fraction_cosine_above_half=float(np.mean(cos > 0.5)),
            )
        return out


def _check_align(align: str) -> None:
    if align not in ALIGN_CHOICES:
        raise ValueError(f"align must be one of {ALIGN_CHOICES} ('mean' removes the mean energy difference), got {align!r}")


def _check_one_composition(compositions: Sequence[Tuple[int, ...]]) -> None:
    """``align="mean"`` removes one constant: right only when every structure has the same atoms.

    Two methods' energy zeros differ per atom (per element), so across compositions one constant leaves an
    error that grows with the atom count, and that error sets the sign of ``A``.
    """
    distinct = sorted(set(compositions))
    if len(distinct) > 1:
        shown = ", ".join(str(len(c)) + " atoms" for c in distinct[:3])
        raise ValueError(
            f"align='mean' removes one constant energy difference, valid for structures of one composition; these "
            f"structures have {len(distinct)} compositions ({shown}{', ...' if len(distinct) > 3 else ''}). Diagnose "
            "one composition at a time, or pass align='none' with energies on a common zero"
        )


def adversarial_directions(
    reference_energies: Sequence[float],
    reference_forces: Sequence[np.ndarray],
    approximate_energies: Sequence[float],
    approximate_forces: Sequence[np.ndarray],
    align: str = "mean",
    numbers: Optional[Sequence[Sequence[int]]] = None,
) -> AdversarialResult:
    """Adversarial directions and their cosine with the approximate force, per structure.

    Parameters
    ----------
    reference_energies, approximate_energies : sequence of float (S,), unit eV
    reference_forces, approximate_forces : sequence of ndarray (N_s, 3), unit eV/Angstrom
    align : {"mean", "none"}
        Remove the mean energy difference before forming ``A`` (see the module notes);
        ``"mean"`` refuses structures of different compositions.
    numbers : sequence of sequences of int, optional
        Atomic numbers of each structure, to check the compositions for ``align="mean"``
        (without them, structures of different sizes are refused).

    Returns
    -------
    AdversarialResult

    Examples
    --------
    >>> import numpy as np
    >>> d = np.array([[0.1, 0.0, 0.0]])
    >>> result = adversarial_directions([0.5 * d[0, 0] ** 2], [-d], [d[0, 0] ** 2], [-2 * d], align="none")
    >>> float(result.cosine[0])  # a stiffer copy of a harmonic well: A points against its force
    -1.0
    """
    _check_align(align)
    e_acc = np.asarray(reference_energies, dtype=np.float64)
    e_app = np.asarray(approximate_energies, dtype=np.float64)
    if not (len(e_acc) == len(e_app) == len(reference_forces) == len(approximate_forces)):
        raise ValueError(
            f"got {len(e_acc)} reference energies, {len(reference_forces)} reference force arrays, {len(e_app)} approximate "
            f"energies and {len(approximate_forces)} approximate force arrays; give one of each per structure"
        )
    if len(e_acc) == 0:
        raise ValueError("no structures given; adversarial directions need at least one labelled structure")
    for name, values in (("reference_energies", e_acc), ("approximate_energies", e_app)):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ValueError(f"{name}[{bad[0]}] is {values[bad[0]]}; drop failed labels before the diagnostic")
    if align == "mean":
        if numbers is not None:
            _check_one_composition([tuple(sorted(int(z) for z in structure)) for structure in numbers])
        else:
            _check_one_composition([(0,) * len(np.asarray(f).reshape(-1, 3)) for f in reference_forces])
    offset = float(np.mean(e_acc - e_app)) if align == "mean" else 0.0
    errors = e_acc - e_app - offset
    directions, cosines, norms, force_errors = [], [], [], []
    for k in range(len(e_acc)):
        f_acc = np.asarray(reference_forces[k], dtype=np.float64)
        f_app = np.asarray(approximate_forces[k], dtype=np.float64)
        direction = adversarial_direction(errors[k], f_acc, 0.0, f_app)
        directions.append(direction)
        cosines.append(force_cosine(direction, f_app))
        norms.append(float(np.linalg.norm(direction)))
        force_errors.append(float(np.sqrt(np.mean((f_app - f_acc) ** 2))))
    return AdversarialResult(
        energy_error=errors,
        offset=offset,
        cosine=np.array(cosines),
        direction_norm=np.array(norms),
        force_error=np.array(force_errors),
        energy_above_minimum=e_acc - e_acc.min(),
        directions=directions,
    )


def label_or_raise(labeler: Any, structures: Sequence[Any], role: str) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Energies and forces of every structure, or a ``RuntimeError`` naming the first failure."""
    result = labeler.label(structures)
    if result.failures:
        k, message = sorted(result.failures.items())[0]
        raise RuntimeError(
            f"the {role} model ({getattr(labeler, 'name', labeler)!r}) failed on {len(result.failures)} of "
            f"{len(structures)} structures, first structure {k}: {message}"
        )
    return np.asarray(result.energies, dtype=np.float64), [np.asarray(f) for f in result.forces]


@dataclass
class RelaxationResult:
    """Energy error along steepest descent with the approximate model's forces.

    Attributes
    ----------
    abs_energy_error : ndarray (S, K+1), eV
        ``|E_acc - E_app - offset|`` after 0..K steps (NaN where a model failed).
    displacement : ndarray (S, K+1), Angstrom
        RMS displacement from the starting structure.
    offset : float, eV
        The constant removed from the energy difference (held fixed along the path).
    step_size : float, Angstrom^2/eV
    """

    abs_energy_error: np.ndarray
    displacement: np.ndarray
    offset: float
    step_size: float
    max_displacement: float

    def summary(self) -> Dict[str, Any]:
        med = np.nanmedian(self.abs_energy_error, axis=0)
        return {
            "steps": int(self.abs_energy_error.shape[1] - 1),
            "step_size_angstrom2_per_ev": self.step_size,
            "max_step_angstrom": self.max_displacement,
            "median_abs_energy_error_ev": [float(v) for v in med],
            "median_rms_displacement_angstrom": [float(v) for v in np.nanmedian(self.displacement, axis=0)],
            "growth_ratio_median": float(
                np.nanmedian(self.abs_energy_error[:, -1] / np.maximum(self.abs_energy_error[:, 0], 1e-12))
            ),
        }


def relaxation_error_growth(
    structures: Sequence[Any],
    approximate: Any,
    reference: Any,
    steps: int = 10,
    step_size: float = 0.01,
    max_displacement: float = 0.05,
    offset: Optional[float] = None,
    align: str = "mean",
) -> RelaxationResult:
    """Energy error after each of ``steps`` steepest-descent steps taken with the approximate model.

    Every step moves each structure by ``step_size * F_app`` (largest atomic move
    capped at ``max_displacement``), then both models are evaluated. The seed's
    observation: the error grows as the model follows its own forces.

    Parameters
    ----------
    structures : sequence of ase.Atoms (Angstrom)
    approximate, reference : Labeler
        Energies (eV) and forces (eV/Angstrom) of structures.
    steps : int
        Number of descent steps ``K`` (>= 1).
    step_size : float, unit Angstrom^2/eV
        Gradient-descent rate: ``R <- R + step_size * F_app(R)``.
    max_displacement : float, unit Angstrom
        Cap on the largest atomic move per step (keeps a stiff or wrong model sane).
    offset : float, unit eV, optional
        Constant subtracted from ``E_acc - E_app``; by default from ``align`` over the
        starting structures.
    align : {"mean", "none"}

    Returns
    -------
    RelaxationResult
    """
    _check_align(align)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not (step_size > 0 and np.isfinite(step_size)):
        raise ValueError(f"step_size must be > 0 Angstrom^2/eV, got {step_size!r}")
    if not (max_displacement > 0 and np.isfinite(max_displacement)):
        raise ValueError(f"max_displacement must be > 0 Angstrom, got {max_displacement!r}")
    structures = [atoms.copy() for atoms in structures]
    if not structures:
        raise ValueError("no structures given to relax")
    if offset is None and align == "mean":
        _check_one_composition([tuple(sorted(int(z) for z in atoms.numbers)) for atoms in structures])
    start = [atoms.positions.copy() for atoms in structures]
    n = len(structures)
    errors = np.full((n, steps + 1), np.nan)
    displacement = np.full((n, steps + 1), np.nan)
    alive = np.ones(n, dtype=bool)
    for k in range(steps + 1):
        current = [structures[i] for i in np.flatnonzero(alive)]
        app = approximate.label(current)
        acc = reference.label(current)
        if k == 0 and offset is None:
            good = np.isfinite(app.energies) & np.isfinite(acc.energies)
            if not good.any():
                raise RuntimeError("both models must label at least one starting structure; every one failed")
            offset = float(np.mean(acc.energies[good] - app.energies[good])) if align == "mean" else 0.0
        for j, i in enumerate(np.flatnonzero(alive)):
            if not (np.isfinite(app.energies[j]) and np.isfinite(acc.energies[j])):
                alive[i] = False
                continue
            errors[i, k] = abs(acc.energies[j] - app.energies[j] - offset)
            displacement[i, k] = float(np.sqrt(np.mean((structures[i].positions - start[i]) ** 2)))
            if k < steps:
                move = step_size * np.asarray(app.forces[j])
                largest = float(np.linalg.norm(move, axis=1).max())
                if largest > max_displacement:
                    move *= max_displacement / largest
                structures[i].positions = structures[i].positions + move
        if not alive.any():
            break
        logger.info("relaxation step %d/%d: median |error| %.4g eV", k, steps, float(np.nanmedian(errors[:, k])))
    return RelaxationResult(errors, displacement, float(offset), float(step_size), float(max_displacement))
