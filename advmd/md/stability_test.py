"""The paper's MD stability test: many short trajectories from the ground state.

Paper (ammonia): 100 trajectories of 5 ps at 500-1000 K, 0.5 fs steps; a trajectory is
unstable when H-H distances leave [0.80, 2.55] Angstrom or the energy falls below the
ground state. Here any committee, structure and set of criteria can be tested; runs go
to parallel worker processes (each single-threaded) and each run is seeded, so the
result is reproducible.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["StabilityTestResult", "stability_test", "topology_from_numbers"]


@dataclass
class StabilityTestResult:
    """Outcome of :func:`stability_test`.

    Attributes
    ----------
    temperatures_k : list of float
        Temperature of each run.
    stable : list of bool
    failure_time_ps : list of float
        Time of the first failed check (NaN for stable runs).
    reasons : list of str
        First failure reason ("" for stable runs).
    """

    temperatures_k: List[float]
    stable: List[bool]
    failure_time_ps: List[float]
    reasons: List[str]
    duration_ps: float
    settings: Dict[str, Any] = field(default_factory=dict)

    @property
    def stable_fraction(self) -> float:
        return float(np.mean(self.stable)) if self.stable else float("nan")

    def failure_time_quantiles(self, quantiles: Sequence[float] = (0.25, 0.5, 0.75)) -> Dict[str, float]:
        times = [t for t in self.failure_time_ps if math.isfinite(t)]
        if not times:
            return {}
        return {f"q{int(q * 100)}": float(np.quantile(times, q)) for q in quantiles}

    def as_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["stable_fraction"] = self.stable_fraction
        data["failure_time_quantiles_ps"] = self.failure_time_quantiles()
        return data


def topology_from_numbers(numbers: Sequence[int], bonds: Sequence[Tuple[int, int]] = ()) -> Any:
    """A one-residue OpenMM topology for a small molecule given by atomic numbers."""
    from openmm import app

    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    atoms = [
        topology.addAtom(f"{app.Element.getByAtomicNumber(z).symbol}{k}", app.Element.getByAtomicNumber(z), residue)
        for k, z in enumerate(numbers)
    ]
    for a, b in bonds:
        topology.addBond(atoms[a], atoms[b])
    return topology


def _build_checkers(spec: Dict[str, Any], topology: Any, reference: np.ndarray, numbers: Sequence[int]) -> List[Any]:
    from advmd.md.stability import (
        BondLengthChecker,
        DistanceRangeChecker,
        EnergyFloorChecker,
        FiniteChecker,
        MinimumDistanceChecker,
    )

    checkers: List[Any] = [FiniteChecker()]
    if spec.get("bond_tolerance"):
        checkers.append(BondLengthChecker.from_topology(topology, reference, spec["bond_tolerance"]))
    if spec.get("min_distance"):
        checkers.append(MinimumDistanceChecker.from_topology(topology, spec["min_distance"]))
    for first, second, low, high in spec.get("distance_ranges", []):
        checkers.append(DistanceRangeChecker.element_pairs(numbers, first, second, low, high))
    if spec.get("energy_floor") is not None:
        checkers.append(EnergyFloorChecker(spec["energy_floor"]))
    return checkers


def _one_run(task: Dict[str, Any]) -> Tuple[bool, float, str]:
    """Worker: one short trajectory; returns (stable, failure time in ps, reason)."""
    import torch

    torch.set_num_threads(1)
    import openmm
    from openmm import app, unit

    from advmd import units
    from advmd.md.runner import engine_divergence
    from advmd.openmm import create_system, use_simple_executor
    from advmd.openmm.platforms import choose_platform
    from advmd.openmm.reporters import InstabilityError, StabilityWatchdog, report_now

    use_simple_executor()
    numbers = task["numbers"]
    topology = topology_from_numbers(numbers, task["bonds"])
    positions = np.asarray(task["positions_angstrom"]) * units.ANGSTROM_TO_NM
    system = create_system(topology, task["model"], backend="torch", bias_strength=task["bias_strength"])
    integrator = openmm.LangevinMiddleIntegrator(
        task["temperature"] * unit.kelvin, task["friction"] / unit.picosecond, task["timestep_fs"] * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(task["seed"] + 1)
    platform = choose_platform(system, task["platform"])
    properties = {"Threads": "1"} if platform.getName() == "CPU" else {}  # one thread per worker process
    simulation = app.Simulation(topology, system, integrator, platform, properties)
    simulation.context.setPositions(positions)
    simulation.context.setVelocitiesToTemperature(task["temperature"] * unit.kelvin, task["seed"] + 1)
    checkers = _build_checkers(task["criteria"], topology, np.asarray(task["positions_angstrom"]), numbers)
    watchdog = StabilityWatchdog(checkers, task["check_interval"])
    simulation.reporters.append(watchdog)
    steps = int(round(task["duration_ps"] * 1000.0 / task["timestep_fs"]))
    try:
        simulation.step(steps)
        if steps % task["check_interval"] != 0:  # the last steps are checked too, as the batched engine does
            report_now(simulation, [watchdog])
    except InstabilityError as failure:
        return False, failure.step * task["timestep_fs"] / 1000.0, "; ".join(failure.reasons)
    except openmm.OpenMMException as error:  # NaN positions refused between two checks: unstable, not a crash
        message = engine_divergence(error)
        if message is None:
            raise
        return False, int(simulation.currentStep) * task["timestep_fs"] / 1000.0, f"engine: {message}"
    return True, float("nan"), ""


def _batched_runs(common: Dict[str, Any], temperatures, seed: int, threads) -> List[Tuple[bool, float, str]]:
    """All temperatures as replicas of one batched committee evaluation per step (in this process)."""
    import torch
    from ase.data import atomic_masses

    from advmd.committee import load_inference_committee
    from advmd.md.batched import committee_energy_function, run_replicas

    if threads:
        torch.set_num_threads(int(threads))
    numbers, timestep_fs = common["numbers"], common["timestep_fs"]
    committee, _ = load_inference_committee(common["model"])  # tabulated files run their tables, as in OpenMM
    committee.eval()
    topology = topology_from_numbers(numbers, common["bonds"])
    positions = np.asarray(common["positions_angstrom"], dtype=float)
    result = run_replicas(
        committee_energy_function(committee, numbers),
        atomic_masses[numbers],
        positions,
        temperatures,
        steps=int(round(common["duration_ps"] * 1000.0 / timestep_fs)),
        timestep_fs=timestep_fs,
        friction_per_ps=common["friction"],
        checkers=_build_checkers(common["criteria"], topology, positions, numbers),
        check_interval=common["check_interval"],
        seed=seed,
    )
    return [
        (ok, float("nan") if ok else k * timestep_fs / 1000.0, reason)
        for ok, k, reason in zip(result.stable, result.failure_step, result.reasons)
    ]


def stability_test(
    model: str,
    numbers: Sequence[int],
    positions_angstrom: np.ndarray,
    bonds: Sequence[Tuple[int, int]] = (),
    n_runs: int = 100,
    duration_ps: float = 5.0,
    temperature_range_k: Tuple[float, float] = (500.0, 1000.0),
    timestep_fs: float = 0.5,
    friction_per_ps: float = 1.0,
    criteria: Optional[Dict[str, Any]] = None,
    check_interval: int = 20,
    processes: Optional[int] = None,
    seed: int = 0,
    platform: str = "auto",
    bias_strength: float = 0.0,
    engine: str = "openmm",
) -> StabilityTestResult:
    """Run ``n_runs`` short committee MD trajectories in parallel and report how many stay physical.

    Parameters
    ----------
    model : str
        Exported committee file.
    numbers, positions_angstrom : the ground-state structure (Angstrom)
    bonds : pairs of atom indices (for bond criteria)
    n_runs, duration_ps, temperature_range_k
        Temperatures are spread evenly over the range (paper: 500-1000 K).
    criteria : dict
        ``bond_tolerance`` (A), ``min_distance`` (A), ``distance_ranges`` (list of
        ``[Z1, Z2, min, max]``; paper's ammonia: ``[[1, 1, 0.80, 2.55]]``), ``energy_floor`` (eV).
    check_interval : int
        Steps between checks (the time resolution of failure times).
    processes : int
        Worker processes (default: CPU count).
    platform : str
        OpenMM platform of each run (``"auto"``: :func:`advmd.openmm.platforms.choose_platform`,
        the Reference platform for the committee alone without a GPU; the CPU platform runs one
        thread per worker).
    engine : str
        ``"openmm"``: each run is an OpenMM simulation of the exported committee in a worker
        process. ``"batched"``: all runs integrate together in one process, one batched
        committee evaluation per step (:mod:`advmd.md.batched`, the same BAOAB Langevin
        splitting); many times faster for a molecule of a few atoms. No bias there.

    Examples
    --------
    >>> stability_test("nh3.pt", [7, 1, 1, 1], ground, criteria={"distance_ranges": [[1, 1, 0.80, 2.55]]})  # doctest: +SKIP
    """
    if int(n_runs) != n_runs or n_runs < 1:
        raise ValueError(f"n_runs (--runs) must be a positive integer, got {n_runs!r}")
    if not duration_ps > 0:
        raise ValueError(f"duration_ps (--ps) must be > 0, got {duration_ps!r}")
    low, high = temperature_range_k
    if not 0 < low <= high:
        raise ValueError(f"temperature_range_k (--tmin, --tmax) must satisfy 0 < low <= high, got {temperature_range_k!r}")
    if not os.path.isfile(model):
        raise FileNotFoundError(f"model {model!r} does not exist")
    if engine not in ("openmm", "batched"):
        raise ValueError(f"engine must be 'openmm' or 'batched', got {engine!r}")
    from advmd.openmm.platforms import check_platform_name

    check_platform_name(platform)
    if engine == "batched" and bias_strength:
        raise ValueError("engine 'batched' runs the unbiased committee; use engine 'openmm' for bias_strength != 0")
    criteria = dict(criteria or {"bond_tolerance": 0.5, "min_distance": 0.7})
    temperatures = list(np.linspace(low, high, int(n_runs))) if n_runs > 1 else [float(low)]
    settings = {
        "n_runs": n_runs,
        "timestep_fs": timestep_fs,
        "criteria": criteria,
        "check_interval": check_interval,
        "seed": seed,
        "model": str(model),
        "engine": engine,
    }
    common = {
        "model": str(model),
        "numbers": [int(z) for z in numbers],
        "positions_angstrom": np.asarray(positions_angstrom, dtype=float).tolist(),
        "bonds": [tuple(map(int, b)) for b in bonds],
        "duration_ps": float(duration_ps),
        "timestep_fs": float(timestep_fs),
        "friction": float(friction_per_ps),
        "criteria": criteria,
        "check_interval": int(check_interval),
        "platform": platform,
        "bias_strength": float(bias_strength),
    }
    run = _batched_runs if engine == "batched" else _openmm_runs
    outcomes = run(common, temperatures, int(seed), processes)
    return StabilityTestResult(
        temperatures_k=[float(t) for t in temperatures],
        stable=[o[0] for o in outcomes],
        failure_time_ps=[o[1] for o in outcomes],
        reasons=[o[2] for o in outcomes],
        duration_ps=float(duration_ps),
        settings=settings,
    )


def _openmm_runs(common: Dict[str, Any], temperatures, seed: int, processes) -> List[Tuple[bool, float, str]]:
    """One OpenMM simulation per temperature, in spawned worker processes."""
    tasks = [{**common, "temperature": float(t), "seed": seed * 100003 + k} for k, t in enumerate(temperatures)]
    workers = processes or os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(_one_run, tasks))
