"""Stability criteria for MD with ML potentials: small checkers that each find one failure mode.

Checkers work in model units (Angstrom, eV, K) on a :class:`Frame`, independent of
the engine; :class:`advmd.openmm.reporters.StabilityWatchdog` feeds them from OpenMM.
Each returns ``None`` when the frame is fine, or a sentence saying what broke.

Criteria
--------
``bonds``          a bonded distance deviates from its reference length by more than a
                   tolerance (default 0.5 Angstrom, the "Forces are not enough" criterion)
``min_distance``   two atoms that are not bonded (nor 1-3 neighbours) come closer than a minimum
``distance_range`` chosen atom pairs leave a [minimum, maximum] range; the paper's ammonia
                   rule is H-H in [0.80, 2.55] Angstrom (:meth:`DistanceRangeChecker.element_pairs`)
``finite``         energy or positions are NaN or infinite (checked on every frame, listed or not)
``temperature``    the mean temperature over a window exceeds a multiple of the target
``uncertainty``    a committee uncertainty exceeds a hard limit
``energy_floor``   the energy falls below a known global minimum (the paper's ammonia criterion)
"""

from __future__ import annotations

import abc
import collections
import math
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "Frame",
    "Checker",
    "BondLengthChecker",
    "MinimumDistanceChecker",
    "DistanceRangeChecker",
    "FiniteChecker",
    "TemperatureChecker",
    "UncertaintyChecker",
    "EnergyFloorChecker",
    "CHECKERS",
    "make_checker",
]


@dataclass
class Frame:
    """One MD snapshot in model units.

    Attributes
    ----------
    step : int
    time_ps : float, unit ps
    positions : ndarray, shape (N, 3), unit Angstrom
    potential_energy : float, unit eV
        The total potential energy, bias included.
    temperature : float, unit K (NaN if unknown)
    sigma_energy, sigma_force, max_force_deviation : float, units eV, eV/Angstrom (NaN without a committee)
    max_deviation_atom : int (-1 without a committee)
    bias_energy : float, unit eV
        The uncertainty bias's share of ``potential_energy`` (0 without a committee or bias).
    cell : ndarray, shape (3, 3), unit Angstrom, or None
        Periodic box vectors as rows (OpenMM's reduced form) of a periodic system; distances between
        atoms are then minimum-image distances.
    """

    step: int
    time_ps: float
    positions: np.ndarray
    potential_energy: float
    temperature: float = math.nan
    sigma_energy: float = math.nan
    sigma_force: float = math.nan
    max_force_deviation: float = math.nan
    max_deviation_atom: int = -1
    bias_energy: float = 0.0
    cell: Optional[np.ndarray] = None


class Checker(abc.ABC):
    """One stability criterion."""

    name = "checker"

    @abc.abstractmethod
    def check(self, frame: Frame) -> Optional[str]:
        """``None`` if the frame is fine, else the reason it is not."""


def _distances(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions[pairs[:, 1]] - positions[pairs[:, 0]], axis=1)


class BondLengthChecker(Checker):
    """Bonded distances stay within ``tolerance`` (Angstrom) of their reference lengths.

    Parameters
    ----------
    bonds : array (B, 2) of atom indices
    reference_lengths : array (B,), unit Angstrom
    tolerance : float, unit Angstrom
    """

    name = "bonds"

    def __init__(self, bonds: np.ndarray, reference_lengths: np.ndarray, tolerance: float = 0.5) -> None:
        self.bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
        self.reference = np.asarray(reference_lengths, dtype=float)
        if len(self.bonds) != len(self.reference):
            raise ValueError(f"bonds has {len(self.bonds)} pairs but reference_lengths has {len(self.reference)}")
        if not tolerance > 0:
            raise ValueError(f"bonds: tolerance must be > 0 Angstrom, got {tolerance!r}")
        self.tolerance = float(tolerance)

    @classmethod
    def from_topology(cls, topology: Any, positions_angstrom: np.ndarray, tolerance: float = 0.5) -> "BondLengthChecker":
        """Bonds of an OpenMM topology, reference lengths from a trusted structure."""
        bonds = np.array([[b[0].index, b[1].index] for b in topology.bonds()], dtype=int).reshape(-1, 2)
        if len(bonds) == 0:
            raise ValueError("bonds: the topology has no bonds (add CONECT records or call createStandardBonds)")
        return cls(bonds, _distances(np.asarray(positions_angstrom), bonds), tolerance)

    def check(self, frame: Frame) -> Optional[str]:
        deviation = np.abs(_distances(frame.positions, self.bonds) - self.reference)
        broken = np.flatnonzero(~np.isfinite(deviation))
        if len(broken):
            a, b = self.bonds[broken[0]]
            return f"bond {a}-{b} length is not finite (NaN or infinite positions)"
        worst = int(np.argmax(deviation))
        if deviation[worst] > self.tolerance:
            a, b = self.bonds[worst]
            return (
                f"bond {a}-{b} length deviates by {deviation[worst]:.3f} A from its reference "
                f"{self.reference[worst]:.3f} A (tolerance {self.tolerance} A)"
            )
        return None


class MinimumDistanceChecker(Checker):
    """No two atoms closer than ``minimum`` (Angstrom), except excluded (bonded, 1-3) pairs."""

    name = "min_distance"

    def __init__(self, minimum: float = 0.7, excluded_pairs: Iterable[Tuple[int, int]] = ()) -> None:
        if not minimum > 0:
            raise ValueError(f"min_distance: minimum must be > 0 Angstrom, got {minimum!r}")
        self.minimum = float(minimum)
        self.excluded = {tuple(sorted((int(a), int(b)))) for a, b in excluded_pairs}

    @classmethod
    def from_topology(cls, topology: Any, minimum: float = 0.7) -> "MinimumDistanceChecker":
        """Exclude bonded pairs and pairs sharing a bonded neighbour (1-2 and 1-3)."""
        neighbours: Dict[int, set] = collections.defaultdict(set)
        for a, b in topology.bonds():
            neighbours[a.index].add(b.index)
            neighbours[b.index].add(a.index)
        excluded = set()
        for a, partners in neighbours.items():
            for b in partners:
                excluded.add((a, b))
                for c in neighbours[b]:
                    if c != a:
                        excluded.add((a, c))
        return cls(minimum, excluded)

    def check(self, frame: Frame) -> Optional[str]:
        from scipy.spatial import cKDTree

        if not np.all(np.isfinite(frame.positions)):
            return "positions contain NaN or infinite values; distances cannot be checked"
        if frame.cell is not None:
            # Periodic: minimum-image pairs (two molecules may meet across the box's faces), by the model's search.
            import torch

            from advmd.committee.neighbors import neighbor_pairs

            positions = torch.as_tensor(frame.positions, dtype=torch.float64)
            i, j, shifts = neighbor_pairs(positions, self.minimum, torch.as_tensor(frame.cell, dtype=torch.float64), half=True)
            distances = (positions[j] - positions[i] + shifts).norm(dim=1)
            found = sorted(
                (min(int(a), int(b)), max(int(a), int(b)), float(d)) for a, b, d in zip(i.tolist(), j.tolist(), distances)
            )
        else:
            found = [
                (a, b, float(np.linalg.norm(frame.positions[a] - frame.positions[b])))
                for a, b in sorted(cKDTree(frame.positions).query_pairs(self.minimum))
            ]
        for a, b, d in found:
            if (a, b) not in self.excluded:
                return f"atoms {a} and {b} are {d:.3f} A apart, closer than the minimum {self.minimum} A"
        return None


class DistanceRangeChecker(Checker):
    """Chosen pairs stay within [minimum, maximum] Angstrom."""

    name = "distance_range"

    def __init__(self, pairs: Sequence[Tuple[int, int]], minimum: float, maximum: float, label: str = "pair") -> None:
        self.pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
        if len(self.pairs) == 0:
            raise ValueError("distance_range: no pairs to check")
        if not 0 <= minimum < maximum:
            raise ValueError(f"distance_range: need 0 <= minimum < maximum, got {minimum!r}, {maximum!r}")
        self.minimum, self.maximum, self.label = float(minimum), float(maximum), label

    @classmethod
    def element_pairs(
        cls, numbers: Sequence[int], first: int, second: int, minimum: float, maximum: float
    ) -> "DistanceRangeChecker":
        """All pairs of atoms with atomic numbers ``first`` and ``second``.

        The paper's ammonia rule: ``element_pairs(numbers, 1, 1, 0.80, 2.55)``.
        """
        numbers = list(numbers)
        pairs = [
            (a, b) for a in range(len(numbers)) for b in range(a + 1, len(numbers)) if {numbers[a], numbers[b]} == {first, second}
        ]
        return cls(pairs, minimum, maximum, label=f"Z{first}-Z{second}")

    def check(self, frame: Frame) -> Optional[str]:
        d = _distances(frame.positions, self.pairs)
        for k in np.flatnonzero(~((d >= self.minimum) & (d <= self.maximum)))[:1]:  # NaN fails too
            a, b = self.pairs[k]
            return f"{self.label} distance {a}-{b} is {d[k]:.3f} A, outside [{self.minimum}, {self.maximum}] A"
        return None


class FiniteChecker(Checker):
    """Energy and positions are finite."""

    name = "finite"

    def check(self, frame: Frame) -> Optional[str]:
        if not math.isfinite(frame.potential_energy):
            return f"potential energy is {frame.potential_energy}"
        if not np.all(np.isfinite(frame.positions)):
            return "positions contain NaN or infinite values"
        return None


class TemperatureChecker(Checker):
    """The mean temperature over the last ``window`` reports stays below ``factor`` x target."""

    name = "temperature"

    def __init__(self, target: float, factor: float = 2.0, window: int = 5) -> None:
        if not target > 0 or not factor > 1 or int(window) != window or window < 1:
            raise ValueError(f"temperature: need target > 0 K, factor > 1, window >= 1; got {target!r}, {factor!r}, {window!r}")
        self.target, self.factor, self.window = float(target), float(factor), int(window)
        self.history: Deque[float] = collections.deque(maxlen=self.window)

    def check(self, frame: Frame) -> Optional[str]:
        if math.isnan(frame.temperature):  # not measured
            return None
        if math.isinf(frame.temperature):
            return f"temperature is {frame.temperature} K (the velocities have diverged)"
        self.history.append(frame.temperature)
        mean = sum(self.history) / len(self.history)
        if len(self.history) == self.window and mean > self.factor * self.target:
            return f"mean temperature {mean:.0f} K over {self.window} reports exceeds {self.factor} x {self.target} K"
        return None


class UncertaintyChecker(Checker):
    """A committee uncertainty stays below a hard limit (eV or eV/Angstrom)."""

    name = "uncertainty"
    METRICS = ("max_force_deviation", "sigma_force", "sigma_energy")

    def __init__(self, limit: float, metric: str = "max_force_deviation") -> None:
        if metric not in self.METRICS:
            raise ValueError(f"uncertainty: metric must be one of {self.METRICS}, got {metric!r}")
        if not limit > 0:
            raise ValueError(f"uncertainty: limit must be > 0, got {limit!r}")
        self.limit, self.metric = float(limit), metric

    def check(self, frame: Frame) -> Optional[str]:
        value = getattr(frame, self.metric)
        unit = "eV" if self.metric == "sigma_energy" else "eV/A"
        if math.isnan(value) and frame.max_deviation_atom < 0:
            return None  # no committee: nothing measured
        if not value <= self.limit:  # NaN or infinite from a committee fails as well
            return f"{self.metric} {value:.3f} {unit} exceeds the hard limit {self.limit} {unit}"
        return None


class EnergyFloorChecker(Checker):
    """The potential energy without the uncertainty bias stays above a known global minimum (eV).

    The bias is subtracted (``potential_energy - bias_energy``): a bias that lowers the energy
    where the committee disagrees (UDD) must not make a structure at the true minimum fail.
    """

    name = "energy_floor"

    def __init__(self, minimum: float) -> None:
        if not math.isfinite(minimum):
            raise ValueError(f"energy_floor: minimum must be finite, got {minimum!r}")
        self.minimum = float(minimum)

    def check(self, frame: Frame) -> Optional[str]:
        energy = frame.potential_energy - frame.bias_energy
        if not energy >= self.minimum:  # NaN fails as well
            return f"potential energy {energy:.4f} eV (bias excluded) is below the known global minimum {self.minimum} eV"
        return None


#: Checker factories by criterion name, for configuration files.
CHECKERS: Dict[str, Callable[..., Checker]] = {
    "bonds": BondLengthChecker,
    "min_distance": MinimumDistanceChecker,
    "distance_range": DistanceRangeChecker,
    "finite": FiniteChecker,
    "temperature": TemperatureChecker,
    "uncertainty": UncertaintyChecker,
    "energy_floor": EnergyFloorChecker,
}


def make_checker(name: str, **options: Any) -> Checker:
    """Build a checker by criterion name (see :data:`CHECKERS`)."""
    try:
        factory = CHECKERS[name]
    except KeyError:
        raise ValueError(f"unknown stability criterion {name!r}; choose from {sorted(CHECKERS)}") from None
    return factory(**options)


def check_all(checkers: Sequence[Checker], frame: Frame) -> List[str]:
    """Reasons from every checker that fails on ``frame``.

    A frame with non-finite positions or energy always fails, with the ``finite`` reason
    alone, whatever the checkers: no geometric criterion can judge it, and nothing should
    integrate on from it.
    """
    reason = FiniteChecker().check(frame)
    if reason is not None:
        return [f"{FiniteChecker.name}: {reason}"]
    return [f"{c.name}: {reason}" for c in checkers for reason in [c.check(frame)] if reason is not None]
