"""Bias schedules: OpenMM reporters that change the bias strength during a run.

Each schedule is an OpenMM reporter (``describeNextReport``/``report``) that sets one
global parameter with ``context.setParameter``; nothing is rebuilt. Add it to
``simulation.reporters`` like any other reporter. The parameter defaults to the advmd
committee's bias strength (:func:`advmd.openmm.parameter_names`), in OpenMM units
(kJ/mol for UDD's amplitude A, nm for HAL's tau), but any global parameter that scales
a bias linearly works.

* :class:`StepSchedule`: piecewise-constant strengths at given steps (a constant bias is
  one entry at step 0).
* :class:`UncertaintyRamp`: UDD's ramp. The strength grows by ``increment`` each time
  ``patience`` steps pass without a new high-uncertainty frame (an uncertainty above
  ``threshold``), up to ``maximum``.
* :class:`AdaptiveBiasStrength`: HAL's tau controller. It keeps the bias force a set
  fraction of the unbiased force, ``|F_bias| = target_ratio * |F_unbiased|``.

Every schedule keeps ``history``: ``(step, strength)`` after each change, and the
adaptive controller also the measured force ratio.
"""

from __future__ import annotations

import abc
import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from advmd import units

logger = logging.getLogger(__name__)

__all__ = ["AdaptiveBiasStrength", "BiasSchedule", "StepSchedule", "UncertaintyRamp"]

METRICS = ("max_force_deviation", "sigma_force", "sigma_energy")


def _default_parameter(parameter: Optional[str]) -> str:
    if parameter is not None:
        return parameter
    from advmd.openmm.forces import parameter_names

    return parameter_names()["bias_strength"]


def _positive_int(name: str, value: Any) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer number of steps, got {value!r}")
    return int(value)


def _finite_nonnegative(name: str, value: Any) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class BiasSchedule(abc.ABC):
    """Base class: a reporter that sets the bias-strength parameter.

    Parameters
    ----------
    reportInterval : int
        Steps between updates.
    parameter : str, optional
        Global parameter to set (default: the advmd committee's bias strength).
    """

    def __init__(self, reportInterval: int, parameter: Optional[str] = None) -> None:
        self.report_interval = _positive_int("reportInterval", reportInterval)
        self.parameter = _default_parameter(parameter)
        self.history: List[Tuple[int, float]] = []

    # OpenMM reporter protocol
    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:
        steps = self.report_interval - simulation.currentStep % self.report_interval
        return {"steps": steps, "periodic": None, "include": self._include(simulation)}

    def _include(self, simulation: Any) -> List[str]:
        return []

    def report(self, simulation: Any, state: Any) -> None:
        current = self.strength(simulation)
        value = self.update(simulation, state, current)
        if value is not None and value != current:
            self.set(simulation, value)

    # helpers
    def strength(self, simulation: Any) -> float:
        context = getattr(simulation, "context", simulation)
        try:
            return float(context.getParameter(self.parameter))
        except Exception as error:
            raise ValueError(
                f"the simulation has no global parameter {self.parameter!r}; build the committee force with a bias, "
                "or give parameter= the name of the parameter to schedule"
            ) from error

    def set(self, simulation: Any, value: float) -> None:
        context = getattr(simulation, "context", simulation)
        context.setParameter(self.parameter, float(value))
        step = int(getattr(simulation, "currentStep", 0))
        self.history.append((step, float(value)))
        logger.info("step %d: %s = %.6g", step, self.parameter, value)

    @abc.abstractmethod
    def update(self, simulation: Any, state: Any, current: float) -> Optional[float]:
        """The new strength (``None`` or ``current`` for no change)."""


class StepSchedule(BiasSchedule):
    """Piecewise-constant strength: ``[(step, strength), ...]``, each applied once the run reaches its step.

    Call :meth:`apply` before the first step so that an entry at step 0 (a constant
    bias) holds from the start; the reporter applies later entries exactly at their
    steps.

    Examples
    --------
    >>> schedule = StepSchedule([(0, 0.0), (2000, 20.0)], parameter="advmd_bias_strength")
    >>> schedule.value_at(2500)
    20.0
    """

    def __init__(self, points: Sequence[Tuple[int, float]], parameter: Optional[str] = None) -> None:
        cleaned = []
        for entry in points:
            if len(entry) != 2:
                raise ValueError(f"schedule entries are (step, strength) pairs, got {entry!r}")
            step, value = entry
            if int(step) != step or step < 0:
                raise ValueError(f"schedule step must be an integer >= 0, got {step!r}")
            cleaned.append((int(step), _finite_nonnegative("schedule strength", value)))
        if not cleaned:
            raise ValueError("a step schedule needs at least one (step, strength) entry")
        self.points = sorted(cleaned)
        super().__init__(1, parameter)

    def value_at(self, step: int) -> Optional[float]:
        """The scheduled strength at ``step`` (``None`` before the first entry)."""
        value = None
        for when, strength in self.points:
            if when <= step:
                value = strength
        return value

    def apply(self, simulation: Any) -> None:
        value = self.value_at(int(simulation.currentStep))
        if value is not None and value != self.strength(simulation):
            self.set(simulation, value)

    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:
        upcoming = [when for when, _ in self.points if when > simulation.currentStep]
        steps = (upcoming[0] - simulation.currentStep) if upcoming else 10**12
        return {"steps": steps, "periodic": None, "include": []}

    def update(self, simulation: Any, state: Any, current: float) -> Optional[float]:
        return self.value_at(int(simulation.currentStep))


class UncertaintyRamp(BiasSchedule):
    """Raise the strength when no high-uncertainty frame has been seen for ``patience`` steps (UDD's ramp).

    Parameters
    ----------
    reportInterval : int
        Steps between uncertainty readings.
    threshold : float
        A reading above it counts as a new high-uncertainty frame. Units of the metric
        in the model's convention: eV/Angstrom for ``max_force_deviation`` and
        ``sigma_force``, eV for ``sigma_energy``.
    patience : int
        Steps without such a frame before the strength is raised (a multiple of
        ``reportInterval``).
    increment : float
        Added to the strength at each raise (OpenMM units of the bias strength).
    maximum : float
        The strength never exceeds this.
    metric : str
        ``max_force_deviation`` (default), ``sigma_force`` or ``sigma_energy``.
    parameter_prefix : str, optional
        Which committee force to read (needed only when a System has several).
    """

    def __init__(
        self,
        reportInterval: int,
        threshold: float,
        patience: int,
        increment: float,
        maximum: float,
        metric: str = "max_force_deviation",
        parameter: Optional[str] = None,
        parameter_prefix: Optional[str] = None,
    ) -> None:
        super().__init__(reportInterval, parameter)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        self.threshold = _finite_nonnegative("threshold", threshold)
        self.patience = _positive_int("patience", patience)
        if self.patience % self.report_interval:
            raise ValueError(f"patience ({patience}) must be a multiple of reportInterval ({reportInterval})")
        self.increment = _finite_nonnegative("increment", increment)
        self.maximum = _finite_nonnegative("maximum", maximum)
        self.parameter_prefix = parameter_prefix
        self.last_found: Optional[int] = None
        self.found = 0

    def _include(self, simulation: Any) -> List[str]:
        from advmd.openmm.reporters import _include

        return _include(simulation, self.parameter_prefix, [])  # what makes the state carry the current statistics

    def _reading(self, simulation: Any, state: Any) -> float:
        from advmd.openmm.reporters import _uncertainty

        uncertainty = _uncertainty(simulation, state, self.parameter_prefix)
        if uncertainty is None:
            raise ValueError("UncertaintyRamp needs an advmd committee force in the System")
        if self.metric == "sigma_energy":
            return uncertainty.sigma_energy * units.KJ_PER_MOL_TO_EV
        value = getattr(uncertainty, self.metric)
        return value / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM

    def update(self, simulation: Any, state: Any, current: float) -> Optional[float]:
        step = int(simulation.currentStep)
        if self.last_found is None:
            self.last_found = step - self.report_interval
        if self._reading(simulation, state) > self.threshold:
            self.last_found = step
            self.found += 1
            return None
        if step - self.last_found >= self.patience:
            self.last_found = step  # wait another patience period at the new strength
            return min(self.maximum, current + self.increment)
        return None


class AdaptiveBiasStrength(BiasSchedule):
    """Keep the bias force a set fraction of the unbiased force (HAL's adaptive tau).

    At each report the controller evaluates the forces at strength 0 and at a probe
    strength (two extra force evaluations), so ``g = dF/d(strength)`` is exact for a
    bias linear in its strength (UDD's A, HAL's tau). It keeps exponential moving
    averages of ``|F_0|`` and ``|g|`` (weight ``smoothing`` on the newest reading) and
    sets ``strength = target_ratio * <|F_0|> / <|g|>``, so the time-averaged ratio
    ``<|F_bias|> / <|F_0|>`` holds at the target while the instantaneous ratio
    fluctuates with the configuration. ``smoothing=1`` uses the current reading alone.

    Parameters
    ----------
    reportInterval : int
    target_ratio : float
        Wanted ``|F_bias| / |F_unbiased|`` (norms over all atoms), e.g. 0.1.
    smoothing : float
        In (0, 1].
    minimum, maximum : float
        Bounds on the strength.
    probe : float
        Strength used to measure ``g`` when the current strength is 0.
    """

    def __init__(
        self,
        reportInterval: int,
        target_ratio: float,
        smoothing: float = 0.2,
        minimum: float = 0.0,
        maximum: float = math.inf,
        probe: float = 1.0,
        parameter: Optional[str] = None,
    ) -> None:
        super().__init__(reportInterval, parameter)
        if not (math.isfinite(target_ratio) and target_ratio > 0):
            raise ValueError(f"target_ratio must be > 0, got {target_ratio!r}")
        if not (0 < smoothing <= 1):
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if not (minimum >= 0 and maximum > minimum):
            raise ValueError(f"need 0 <= minimum < maximum, got minimum={minimum!r}, maximum={maximum!r}")
        if not (math.isfinite(probe) and probe > 0):
            raise ValueError(f"probe must be > 0, got {probe!r}")
        self.target_ratio = float(target_ratio)
        self.smoothing = float(smoothing)
        self.minimum = float(minimum)
        self.maximum = float(maximum)
        self.probe = float(probe)
        self.mean_unbiased: Optional[float] = None
        self.mean_slope: Optional[float] = None
        #: (step, strength before the update, |F_unbiased|, |dF/d strength|) at each report (kJ/mol/nm)
        self.readings: List[Tuple[int, float, float, float]] = []

    def _forces(self, context: Any, value: float) -> np.ndarray:
        context.setParameter(self.parameter, value)
        return np.asarray(context.getState(getForces=True).getForces(asNumpy=True)._value)

    def measure(self, simulation: Any) -> Tuple[float, float]:
        """``(|F_unbiased|, |dF/d strength|)`` at the current configuration (kJ/mol/nm per unit strength)."""
        context = getattr(simulation, "context", simulation)
        current = float(context.getParameter(self.parameter))
        try:
            unbiased = self._forces(context, 0.0)
            probe = current if current > 0 else self.probe
            slope = (self._forces(context, probe) - unbiased) / probe
        finally:
            context.setParameter(self.parameter, current)
            if self._python_committee(context):
                # a PythonForce committee keeps the statistics of its last call for other reporters:
                # evaluate once more at the applied strength so they do not read the probe's
                context.getState(energy=True)
        return float(np.linalg.norm(unbiased)), float(np.linalg.norm(slope))

    @staticmethod
    def _python_committee(context: Any) -> bool:
        return any("committee#" in force.getName() for force in context.getSystem().getForces())

    def time_averaged_ratio(self, skip: int = 0) -> float:
        """``sum |F_bias| / sum |F_unbiased|`` over the readings after the first ``skip``."""
        rows = self.readings[skip:]
        bias = sum(strength * slope for _, strength, _, slope in rows)
        unbiased = sum(f0 for _, _, f0, _ in rows)
        return bias / unbiased if unbiased > 0 else float("nan")

    def update(self, simulation: Any, state: Any, current: float) -> Optional[float]:
        unbiased, slope = self.measure(simulation)
        self.readings.append((int(simulation.currentStep), current, unbiased, slope))
        a = self.smoothing
        self.mean_unbiased = unbiased if self.mean_unbiased is None else (1 - a) * self.mean_unbiased + a * unbiased
        self.mean_slope = slope if self.mean_slope is None else (1 - a) * self.mean_slope + a * slope
        if self.mean_slope == 0 or self.mean_unbiased == 0:
            return None
        wanted = self.target_ratio * self.mean_unbiased / self.mean_slope
        return float(min(self.maximum, max(self.minimum, wanted)))
