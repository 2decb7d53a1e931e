"""Production MD with a committee: monitored, checkpointed, resumable (``advmd md``).

One output directory holds everything a run needs to continue:

``state.chk``        OpenMM checkpoint (positions, velocities, thermostat RNG, step), replaced atomically
``progress.json``    status, step of the last checkpoint, bias strength, failure reason (atomic)
``uncertainty.csv``  one row per report (see :class:`~advmd.openmm.reporters.UncertaintyReporter`)
``uncertainty.h5``   the same rows as an HDF5 table ``/uncertainty`` (PyTables)
``last_good.pdb``    the last good frames, written if the run stops as unstable (a failed check, or
                     the engine refusing NaN positions between two reports)

Run the same command again after a crash (even ``kill -9``): the runner loads the last
checkpoint, drops the rows written after it (and a torn last line) from the CSV, deletes
dataset rows this run extracted after it, and continues. No reported frame is lost or
duplicated. Memory stays bounded: reporters stream to disk.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from advmd import units
from advmd._io import durable_replace, write_text_atomic
from advmd.config import merge_config

logger = logging.getLogger(__name__)

__all__ = ["MD_DEFAULTS", "load_md_config", "validate_md_config", "run_md", "RunResult", "engine_divergence"]

MD_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "system": {"pdb": ""},
    "model": {"file": "", "backend": "torch", "compile": False},
    "integrator": {"kind": "langevin_middle", "temperature": 300.0, "timestep": 0.5, "friction": 1.0, "seed": 0},
    "run": {"steps": 20000, "platform": "auto", "output": "md-run", "checkpoint_interval": 1000, "minimize": True},
    "bias": {"strength": 0.0, "schedule": []},
    "report": {"interval": 100, "every_step": False},
    "watchdog": {
        "enabled": True,
        "bond_tolerance": 0.5,
        "min_distance": 0.7,
        "temperature_factor": 3.0,
        "uncertainty_limit": 0.0,
        "energy_floor": "",
    },
    "extract": {
        "enabled": False,
        "database": "frames.db",
        "metric": "max_force_deviation",
        "lower": 0.05,
        "upper": 0.5,
        "min_spacing": 1000,
        "generation": 0,
    },
}
INTEGRATORS = ("langevin_middle", "verlet", "nose_hoover")


@dataclass
class RunResult:
    """Outcome of :func:`run_md`."""

    status: str  # "completed" or "unstable"
    steps: int
    failure_step: Optional[int]
    reasons: List[str]
    seconds: float
    ns_per_day: float
    resumed_from: Optional[int]


def load_md_config(source: Union[str, os.PathLike, Dict[str, Any]]) -> Dict[str, Any]:
    """Merge a TOML file (or dict) over :data:`MD_DEFAULTS` and validate it (no step runs before this passes)."""
    config = merge_config(
        MD_DEFAULTS,
        source,
        [("system", "pdb"), ("model", "file"), ("run", "output"), ("extract", "database")],
        example="md.example.toml",
    )
    validate_md_config(config)
    return config


def _positive_int(config: Dict[str, Any], section: str, key: str) -> None:
    value = config[section][key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"[{section}] {key} must be a positive integer, got {value!r}")


def validate_md_config(config: Dict[str, Any]) -> None:
    """Raise ``ValueError``/``FileNotFoundError`` naming the field for any bad setting."""
    from advmd.openmm.forces import BACKENDS, CommitteeComputation
    from advmd.openmm.platforms import check_platform_name

    for section, key in (("run", "steps"), ("run", "checkpoint_interval"), ("report", "interval")):
        _positive_int(config, section, key)
    integ = config["integrator"]
    if integ["kind"] not in INTEGRATORS:
        raise ValueError(f"[integrator] kind must be one of {INTEGRATORS}, got {integ['kind']!r}")
    for key in ("temperature", "timestep", "friction"):
        if not (isinstance(integ[key], (int, float)) and integ[key] > 0):
            raise ValueError(f"[integrator] {key} must be a number > 0, got {integ[key]!r}")
    if config["model"]["backend"] not in BACKENDS:
        raise ValueError(f"[model] backend must be one of {BACKENDS}, got {config['model']['backend']!r}")
    compile_ = config["model"]["compile"]
    if not isinstance(compile_, bool):
        raise ValueError(f"[model] compile must be true or false, got {compile_!r}")
    if compile_ and config["model"]["backend"] != "python":
        raise ValueError(
            '[model] compile = true needs backend = "python" (TorchForce runs TorchScript, which torch.compile cannot '
            f"produce); got backend {config['model']['backend']!r}"
        )
    try:
        check_platform_name(config["run"]["platform"])
    except ValueError as error:
        raise ValueError(f"[run] {error}") from None
    every_step = config["report"]["every_step"]
    if not isinstance(every_step, bool):
        raise ValueError(f"[report] every_step must be true or false, got {every_step!r}")
    if every_step and config["report"]["interval"] > CommitteeComputation.HISTORY_LIMIT:
        raise ValueError(
            f"[report] every_step = true keeps at most {CommitteeComputation.HISTORY_LIMIT} evaluations between reports; "
            f"interval {config['report']['interval']} is longer"
        )
    if every_step and config["model"]["backend"] != "python":
        raise ValueError(
            '[report] every_step = true needs [model] backend = "python" (the force records its own evaluations); '
            f"got backend {config['model']['backend']!r}"
        )
    for section, key in (("system", "pdb"), ("model", "file")):
        value = config[section][key]
        if value and not Path(value).is_file():
            raise FileNotFoundError(f"[{section}] {key} {value!r} does not exist")
    schedule = config["bias"]["schedule"]
    if not isinstance(schedule, list) or any(not (isinstance(e, list) and len(e) == 2) for e in schedule):
        raise ValueError(f"[bias] schedule must be a list of [step, strength] pairs, got {schedule!r}")
    for step, strength in schedule:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (step, strength))
        if not numbers or int(step) != step or step < 0 or not math.isfinite(strength) or strength < 0:
            raise ValueError(f"[bias] schedule entry [{step}, {strength}] needs a step >= 0 and a finite strength >= 0")
    if not (math.isfinite(config["bias"]["strength"]) and config["bias"]["strength"] >= 0):
        raise ValueError(f"[bias] strength must be a finite number >= 0, got {config['bias']['strength']!r}")
    watch = config["watchdog"]
    if (
        watch["bond_tolerance"] <= 0
        or watch["min_distance"] <= 0
        or watch["temperature_factor"] <= 1
        or watch["uncertainty_limit"] < 0
    ):
        raise ValueError("[watchdog] needs bond_tolerance > 0, min_distance > 0, temperature_factor > 1, uncertainty_limit >= 0")
    if watch["energy_floor"] != "" and not isinstance(watch["energy_floor"], (int, float)):
        raise ValueError(f'[watchdog] energy_floor must be a number (eV) or "", got {watch["energy_floor"]!r}')
    ext = config["extract"]
    if ext["enabled"]:
        if ext["metric"] not in ("max_force_deviation", "sigma_force", "sigma_energy"):
            raise ValueError(f"[extract] metric {ext['metric']!r} is not max_force_deviation, sigma_force or sigma_energy")
        if not (0 <= ext["lower"] < ext["upper"]):
            raise ValueError(f"[extract] needs 0 <= lower < upper, got {ext['lower']!r}, {ext['upper']!r}")


def _atomic_json(path: Path, payload: Dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=1))


def _strength_at(config: Dict[str, Any], step: int) -> float:
    strength = float(config["bias"]["strength"])
    for when, value in sorted(config["bias"]["schedule"]):
        if step >= when:
            strength = float(value)
    return strength


def _next_stop(config: Dict[str, Any], step: int, total: int) -> int:
    interval = config["run"]["checkpoint_interval"]
    stops = [total, (step // interval + 1) * interval] + [int(w) for w, _ in config["bias"]["schedule"] if int(w) > step]
    return min(s for s in stops if s > step)


def _build_integrator(config: Dict[str, Any]) -> Any:
    import openmm
    from openmm import unit

    integ = config["integrator"]
    temperature = integ["temperature"] * unit.kelvin
    timestep = integ["timestep"] * unit.femtoseconds
    if integ["kind"] == "langevin_middle":
        integrator = openmm.LangevinMiddleIntegrator(temperature, integ["friction"] / unit.picosecond, timestep)
        integrator.setRandomNumberSeed(int(integ["seed"]) + 1)
    elif integ["kind"] == "nose_hoover":
        integrator = openmm.NoseHooverIntegrator(temperature, integ["friction"] / unit.picosecond, timestep)
    else:
        integrator = openmm.VerletIntegrator(timestep)
    return integrator


def run_md(config: Dict[str, Any], progress: bool = True, stop_after_steps: Optional[int] = None) -> RunResult:
    """Run (or resume) a monitored committee MD job from a validated config.

    Parameters
    ----------
    config : dict
        From :func:`load_md_config`.
    progress : bool
        Show a progress bar with ns/day and time left.
    stop_after_steps : int, optional
        Stop (as if interrupted) once this many steps ran in this call; for tests.
    """
    import openmm
    from openmm import app, unit

    from advmd.md.stability import (
        BondLengthChecker,
        EnergyFloorChecker,
        FiniteChecker,
        MinimumDistanceChecker,
        TemperatureChecker,
        UncertaintyChecker,
    )
    from advmd.openmm import create_system, parameter_names, use_simple_executor
    from advmd.openmm.reporters import (
        FrameExtractor,
        InstabilityError,
        StabilityWatchdog,
        UncertaintyReporter,
        rebuild_hdf5_from_csv,
        repair_csv,
        repair_hdf5,
        report_now,
    )
    from advmd.systems import alanine_dipeptide, resource_path

    validate_md_config(config)
    use_simple_executor()  # restarts from a checkpoint must reproduce the uninterrupted run bit for bit
    out = Path(config["run"]["output"])
    out.mkdir(parents=True, exist_ok=True)
    progress_file, checkpoint = out / "progress.json", out / "state.chk"
    state_record: Dict[str, Any] = json.loads(progress_file.read_text()) if progress_file.exists() else {}
    if state_record.get("status") in ("completed", "unstable"):
        logger.info("run in %s already %s at step %s", out, state_record["status"], state_record.get("step"))
        return RunResult(
            state_record["status"],
            state_record["step"],
            state_record.get("failure_step"),
            state_record.get("reasons", []),
            0.0,
            float("nan"),
            None,
        )

    if config["system"]["pdb"]:
        pdb = app.PDBFile(config["system"]["pdb"])
        topology, positions = pdb.topology, pdb.positions
    else:
        topology, positions = alanine_dipeptide()
    model = config["model"]["file"] or str(resource_path("alanine-dipeptide-committee.pt"))
    strength_name = parameter_names()["bias_strength"]
    system = create_system(
        topology,
        model,
        backend=config["model"]["backend"],
        bias_strength=_strength_at(config, 0),
        compile=config["model"]["compile"],
    )
    platform = _run_platform(config, system, state_record, checkpoint.exists(), checkpoint)
    simulation = app.Simulation(topology, system, _build_integrator(config), platform)
    reference = np.asarray(positions.value_in_unit(unit.nanometer)) * units.NM_TO_ANGSTROM
    resumed_from = None
    if checkpoint.exists():
        simulation.loadCheckpoint(str(checkpoint))
        resumed_from = int(simulation.currentStep)
        logger.info("resuming %s from step %d", out, resumed_from)
    else:
        # Recorded before the first checkpoint exists: a resume must use the platform that writes it.
        _atomic_json(progress_file, {"status": "running", "step": 0, "platform": platform.getName()})
        simulation.context.setPositions(positions)
        if config["run"]["minimize"]:
            simulation.minimizeEnergy(maxIterations=500)
        simulation.context.setVelocitiesToTemperature(
            config["integrator"]["temperature"] * unit.kelvin, int(config["integrator"]["seed"]) + 1
        )
    start_step = int(simulation.currentStep)

    interval = config["report"]["interval"]
    csv_path = out / "uncertainty.csv"
    h5_path = out / "uncertainty.h5"
    if resumed_from is not None and csv_path.exists():
        repair_csv(csv_path, keep_through_step=resumed_from)
    if resumed_from is not None and h5_path.exists():
        try:
            repair_hdf5(h5_path, keep_through_step=resumed_from)
        except Exception as error:  # a kill mid-write can corrupt HDF5: rebuild it from the (repaired) CSV
            logger.warning("rebuilding %s from %s: %s", h5_path, csv_path, error)
            rebuild_hdf5_from_csv(csv_path, h5_path)
    reporter = UncertaintyReporter(
        csv_path, interval, append=resumed_from is not None, hdf5=h5_path, every_step=config["report"]["every_step"]
    )
    simulation.reporters.append(reporter)
    watchdog = None
    if config["watchdog"]["enabled"]:
        w = config["watchdog"]
        checkers = [
            FiniteChecker(),
            BondLengthChecker.from_topology(topology, reference, w["bond_tolerance"]),
            MinimumDistanceChecker.from_topology(topology, w["min_distance"]),
            TemperatureChecker(config["integrator"]["temperature"], w["temperature_factor"], 5),
        ]
        if w["uncertainty_limit"] > 0:
            checkers.append(UncertaintyChecker(w["uncertainty_limit"]))
        if w["energy_floor"] != "":
            checkers.append(EnergyFloorChecker(float(w["energy_floor"])))
        watchdog = StabilityWatchdog(checkers, interval, failure_file=out / "last_good.pdb")
        # The temperature window continues where the checkpoint left it: only if progress.json was written for that
        # checkpoint (a kill between the checkpoint and progress.json leaves the window of the checkpoint before).
        if resumed_from is not None and state_record.get("step") == resumed_from:
            checkers[3].history.extend(state_record.get("temperature_window", []))
        simulation.reporters.append(watchdog)
    extractor = None
    if config["extract"]["enabled"]:
        from advmd.data import Dataset

        e = config["extract"]
        dataset = Dataset(e["database"])
        run_id = str(out.resolve())
        # Frames this run extracted after its checkpoint (or at all, without one) will be extracted again.
        kept_steps, stale = [], []
        for row in dataset.rows(source="md"):
            selection = row.data.get("selection", {})
            if selection.get("run") != run_id:
                continue
            if resumed_from is None or selection["step"] > resumed_from:
                stale.append(row.id)
            else:
                kept_steps.append(selection["step"])
        if stale:
            dataset.db.delete(stale)
        extractor = FrameExtractor(
            dataset, interval, e["lower"], e["upper"], e["metric"], e["min_spacing"], e["generation"], run_id=run_id
        )
        if kept_steps:
            extractor.last_extracted = max(kept_steps)  # keep min_spacing across the restart
        simulation.reporters.append(extractor)

    total = config["run"]["steps"]
    timestep_ns = config["integrator"]["timestep"] * 1e-6
    bar = _Bar(total, start_step, timestep_ns, progress)
    t0 = time.perf_counter()
    status, failure_step, reasons = "running", None, []
    try:
        while simulation.currentStep < total:
            step = int(simulation.currentStep)
            simulation.context.setParameter(strength_name, _strength_at(config, step))
            target = _next_stop(config, step, total)
            if stop_after_steps is not None:
                target = min(target, start_step + stop_after_steps)
                if step >= start_step + stop_after_steps:
                    break
            simulation.step(target - step)
            bar.update(int(simulation.currentStep))
            if simulation.currentStep == total and total % interval != 0:
                # The steps after the last multiple of the report interval: checked and logged before the final
                # checkpoint, as a report would (a run of 20050 steps at interval 100 left 50 steps unchecked).
                report_now(simulation, [r for r in (reporter, watchdog, extractor) if r is not None])
            if simulation.currentStep % config["run"]["checkpoint_interval"] == 0 or simulation.currentStep == total:
                reporter.flush_pending()  # every_step rows recorded since the last report: on disk before the checkpoint
                _save(simulation, checkpoint)
                _atomic_json(
                    progress_file,
                    {
                        "status": "running",
                        "step": int(simulation.currentStep),
                        "platform": platform.getName(),
                        "bias_strength": _strength_at(config, int(simulation.currentStep)),
                        "temperature_window": list(watchdog.checkers[3].history) if watchdog is not None else [],
                    },
                )
        if simulation.currentStep >= total:
            status = "completed"
    except InstabilityError as failure:
        status, failure_step, reasons = "unstable", failure.step, failure.reasons
    except openmm.OpenMMException as error:
        # The engine stopped between two reports. A diverged trajectory shows up here when the committee
        # force refuses non-finite positions (or OpenMM finds a NaN coordinate) before the watchdog's next
        # report: record it as unstable, like a failed check. Anything else propagates (the run stays resumable).
        message = engine_divergence(error)
        if message is None:
            raise
        status, failure_step, reasons = "unstable", int(simulation.currentStep), [f"engine: {message}"]
        if watchdog is not None:
            watchdog.record_failure(simulation, failure_step, reasons)
        else:
            logger.warning("run stopped as unstable at step %d: %s", failure_step, message)
    finally:
        bar.close()
        reporter.close()
        if extractor is not None:
            extractor.close()
    seconds = time.perf_counter() - t0
    ran = int(simulation.currentStep) - start_step
    ns_per_day = ran * timestep_ns / seconds * 86400 if seconds > 0 else float("nan")
    if status != "running":
        _atomic_json(
            progress_file,
            {
                "status": status,
                "step": int(simulation.currentStep),
                "platform": platform.getName(),
                "failure_step": failure_step,
                "reasons": reasons,
                "ns_per_day": ns_per_day,
            },
        )
    return RunResult(status, int(simulation.currentStep), failure_step, reasons, seconds, ns_per_day, resumed_from)


_DIVERGENCE = re.compile(r"\bNaN\b|infinite|diverged", re.IGNORECASE)


def engine_divergence(error: BaseException) -> Optional[str]:
    """The last line of an engine error that reports a diverged trajectory (NaN or infinite values), else None.

    The committee forces refuse non-finite positions ("positions contain NaN or infinite values; the
    simulation has diverged ..."), and OpenMM's own platforms report "Particle coordinate is NaN".
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    if text.startswith("builtins.ValueError: "):
        text = text[len("builtins.ValueError: ") :]
    return text if _DIVERGENCE.search(text) else None  # the last line: the traceback quotes source text


def _checkpoint_platform(checkpoint: Path) -> Optional[str]:
    """The platform named in an OpenMM binary checkpoint's header, or None if the header is not as expected.

    OpenMM writes ``b"OpenMM Binary Checkpoint\\n"``, one byte, the name's length (int32, little-endian) and
    the name of the platform that wrote it; it loads the file only on that platform.
    """
    magic = b"OpenMM Binary Checkpoint\n"
    try:
        with open(checkpoint, "rb") as handle:
            head = handle.read(len(magic) + 5 + 64)
    except OSError:
        return None
    if not head.startswith(magic) or len(head) < len(magic) + 5:
        return None
    length = int.from_bytes(head[len(magic) + 1 : len(magic) + 5], "little")
    name = head[len(magic) + 5 : len(magic) + 5 + length]
    if not 0 < length <= 64 or len(name) != length or not name.isalnum():
        return None
    return name.decode("ascii")


def _run_platform(config: Dict[str, Any], system: Any, state_record: Dict[str, Any], resuming: bool, checkpoint: Path) -> Any:
    """The OpenMM platform of this run: ``[run] platform`` (``auto``: :func:`~advmd.openmm.platforms.choose_platform`).

    A checkpoint loads only on the platform that wrote it, so a resumed run takes that one: named in the
    checkpoint's header, else recorded in ``progress.json``, else the configured name (``CPU`` for ``auto``:
    the default before the platform was recorded).
    """
    from advmd.openmm.platforms import choose_platform

    requested = config["run"]["platform"]
    if not resuming:
        return choose_platform(system, requested)
    recorded = _checkpoint_platform(checkpoint) or state_record.get("platform") or (requested if requested != "auto" else "CPU")
    if requested not in ("auto", recorded):
        raise ValueError(
            f"[run] platform {requested!r} differs from the platform {recorded!r} that wrote the checkpoint {checkpoint}; "
            f"a checkpoint resumes only on its own platform: set platform = {recorded!r} (or 'auto'), or use a new [run] output"
        )
    return choose_platform(system, str(recorded))


def _save(simulation: Any, checkpoint: Path) -> None:
    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    simulation.saveCheckpoint(str(tmp))
    durable_replace(tmp, checkpoint)  # a kill or crash during the write keeps the previous checkpoint


class _Bar:
    """Progress bar with ns/day and time left (tqdm), or log lines without tqdm."""

    def __init__(self, total: int, start: int, timestep_ns: float, enabled: bool) -> None:
        self.total, self.last, self.timestep_ns, self.t0, self.start = total, start, timestep_ns, time.perf_counter(), start
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=start, unit="step", desc="md")
            except ImportError:
                self.bar = None

    def update(self, step: int) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else float("nan")
        ns_day = rate * self.timestep_ns * 86400
        if self.bar is not None:
            self.bar.update(step - self.last)
            self.bar.set_postfix(ns_per_day=f"{ns_day:.2f}")
        else:
            left = (self.total - step) / rate if rate > 0 else float("nan")
            logger.info("step %d/%d  %.2f ns/day  %.0f s left", step, self.total, ns_day, left)
        self.last = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
