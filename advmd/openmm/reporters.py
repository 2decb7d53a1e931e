"""OpenMM reporters for committee MD: uncertainty log, stability watchdog, frame extraction.

All follow OpenMM's reporter protocol (``describeNextReport`` returning the dict form,
``report(simulation, state)``) and work in any OpenMM script. They ask for
``parameterDerivatives`` where a TorchForce committee is present, so the committee
statistics come from the Simulation's single ``getState`` call: no extra model
evaluation. Files are written as they go (bounded memory) and flushed every report.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Union

import numpy as np

from advmd import units
from advmd._io import write_text_atomic
from advmd.md.stability import Checker, Frame, check_all

logger = logging.getLogger(__name__)

__all__ = [
    "UncertaintyReporter",
    "StabilityWatchdog",
    "FrameExtractor",
    "InstabilityError",
    "frame_from_state",
    "report_now",
    "repair_csv",
    "repair_hdf5",
    "rebuild_hdf5_from_csv",
]

UNCERTAINTY_COLUMNS = [
    "step",
    "time_ps",
    "potential_energy_kjmol",
    "sigma_energy_kjmol",
    "sigma_force_kjmol_nm",
    "max_force_deviation_kjmol_nm",
    "max_deviation_atom",
    "max_deviation_atom_name",
    "bias_energy_kjmol",
    "bias_strength",
]


class InstabilityError(RuntimeError):
    """Raised by :class:`StabilityWatchdog` to stop a simulation that became unphysical.

    Attributes
    ----------
    step : int
        The step at which the failure was detected.
    reasons : list of str
    """

    def __init__(self, step: int, reasons: List[str]) -> None:
        super().__init__(f"unstable at step {step}: " + "; ".join(reasons))
        self.step = step
        self.reasons = reasons


def _check_interval(report_interval: int) -> int:
    if int(report_interval) != report_interval or report_interval < 1:
        raise ValueError(f"reportInterval must be a positive integer number of steps, got {report_interval!r}")
    return int(report_interval)


_SYSTEM_CACHE: "weakref.WeakKeyDictionary[Any, Dict[Any, Any]]" = weakref.WeakKeyDictionary()


def _cached(simulation: Any, key: Any, compute: Any) -> Any:
    """Per-Simulation cache of facts that do not change during a run (deferred setup on first report)."""
    try:
        store = _SYSTEM_CACHE.setdefault(simulation, {})
    except TypeError:  # not weak-referenceable: no cache
        return compute()
    if key not in store:
        store[key] = compute()
    return store[key]


def _committee(simulation: Any, prefix: Optional[str]) -> Optional[Any]:
    from advmd.openmm.forces import _find_committee_forces

    def find() -> Optional[Any]:
        forces = _find_committee_forces(simulation.system, prefix)
        if len(forces) > 1:
            raise ValueError("the System has several committee forces; give parameter_prefix to choose one")
        return forces[0] if forces else None

    return _cached(simulation, ("committee", prefix), find)


def _include(simulation: Any, prefix: Optional[str], extra: Sequence[str]) -> List[str]:
    """What a reader of the committee statistics asks of the Simulation's ``getState``.

    TorchForce path: the parameter derivatives, which carry the statistics. PythonForce path: the
    energy, so that the force evaluates the current positions (its statistics are those of its last
    evaluation, otherwise the previous step's); it keeps that result, and the next step's call at these
    positions costs no model evaluation.
    """
    include = list(extra)
    force = _committee(simulation, prefix)
    if force is not None:
        if "#" not in force.getName():
            include.append("parameterDerivatives")
        elif "energy" not in include:
            include.append("energy")
    return include


def _uncertainty(simulation: Any, state: Any, prefix: Optional[str]) -> Optional[Any]:
    from advmd.openmm.forces import read_uncertainty

    force = _committee(simulation, prefix)
    if force is None:
        return None
    name = force.getName()
    if "#" in name:
        return read_uncertainty(simulation.context, name.split("committee")[0], evaluate=False)
    return read_uncertainty(simulation.context, name[: -len("committee")], state=state)


def _degrees_of_freedom(system: Any) -> int:
    import openmm

    dof = sum(3 for k in range(system.getNumParticles()) if system.getParticleMass(k).value_in_unit(openmm.unit.dalton) > 0)
    dof -= system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return max(dof, 1)


def frame_from_state(simulation: Any, state: Any, prefix: Optional[str] = None) -> Frame:
    """A :class:`Frame` (Angstrom, eV, K) from an OpenMM state with positions and energy."""
    from openmm import unit

    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * units.KJ_PER_MOL_TO_EV
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    r = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    dof = _cached(simulation, "dof", lambda: _degrees_of_freedom(simulation.system))
    temperature = 2.0 * kinetic / (dof * r)
    frame = Frame(
        int(simulation.currentStep), state.getTime().value_in_unit(unit.picosecond), np.asarray(positions), energy, temperature
    )
    if _cached(simulation, "periodic", simulation.system.usesPeriodicBoundaryConditions):
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM
        frame.cell = np.asarray(box)
    u = _uncertainty(simulation, state, prefix)
    if u is not None:
        frame.sigma_energy = u.sigma_energy * units.KJ_PER_MOL_TO_EV
        frame.sigma_force = u.sigma_force / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
        frame.max_force_deviation = u.max_force_deviation / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
        frame.max_deviation_atom = u.max_deviation_atom
        frame.bias_energy = u.bias_energy * units.KJ_PER_MOL_TO_EV
    return frame


def report_now(simulation: Any, reporters: List[Any]) -> None:
    """Give ``reporters`` a report of the current state, in their order, as OpenMM's next report would (the same
    ``getState``: the integrator's force groups, global parameters, what the reporters include, unwrapped).

    For the steps after a run's last report interval (``advmd md``, ``advmd stability``).
    """
    include = set()
    for r in reporters:
        include.update(r.describeNextReport(simulation)["include"])
    state = simulation.context.getState(
        groups=simulation.context.getIntegrator().getIntegrationForceGroups(),
        enforcePeriodicBox=False,
        parameters=True,
        **{name: True for name in include},
    )
    for r in reporters:
        r.report(simulation, state)


def _atom_labels(topology: Any) -> List[str]:
    """``residue-name residue-id : atom-name`` of every atom (the log's atom column)."""
    return [f"{a.residue.name}{a.residue.id}:{a.name}" for a in topology.atoms()]


class UncertaintyReporter:
    """Per-report committee uncertainty as CSV (one row a report, flushed each time).

    Columns: step, time (ps), potential energy (kJ/mol), sigma_E (kJ/mol), sigma_F and the
    max per-atom force deviation (kJ/mol/nm), the atom carrying it (index and
    ``residue-name:atom-name``), bias energy (kJ/mol) and bias strength.

    Parameters
    ----------
    file : str or path-like
    reportInterval : int
        Steps between reports (OpenMM's keyword).
    append : bool
        Continue an existing file after a restart: a torn last line is dropped and
        steps already in the file are not written again.
    parameter_prefix : str, optional
        Which committee force (only needed when the System holds several).
    hdf5 : path, optional
        Also write the rows to an HDF5 table ``/uncertainty`` (PyTables), with the same
        columns and the same restart behaviour.
    every_step : bool
        Log every step, not only report steps, at no extra model evaluation (needs the
        ``backend="python"`` force). The force records each of its evaluations; every
        report writes the rows recorded since the previous one. An integrator evaluates
        the forces of step ``n`` at the start of the next step, so the rows of a report
        reach up to the step before it; rows still pending are written by
        :meth:`flush_pending` and :meth:`close` (the last step of a run is written only if
        its forces were evaluated). ``potential_energy_kjmol`` is then
        the committee force's energy, which is the potential energy when the committee is
        the System's only energy term. Where several evaluations share a step (energy
        minimisation, another reporter's energy request), the last one is written.
        Without it, each report asks OpenMM for the energy and statistics, which calls the
        force at the step's new positions; the next step calls it again there and gets the
        kept result, so that costs no second model evaluation either (both force paths;
        1.04-1.12x a plain step at interval 1).
    """

    def __init__(
        self,
        file: Union[str, os.PathLike],
        reportInterval: int,
        append: bool = False,
        parameter_prefix: Optional[str] = None,
        hdf5: Optional[Union[str, os.PathLike]] = None,
        every_step: bool = False,
    ) -> None:
        self.interval = _check_interval(reportInterval)
        if every_step:
            from advmd.openmm.forces import CommitteeComputation

            if self.interval > CommitteeComputation.HISTORY_LIMIT:
                raise ValueError(
                    f"reportInterval {self.interval} with every_step=True exceeds the {CommitteeComputation.HISTORY_LIMIT} "
                    "evaluations a force keeps between reports; report more often"
                )
        self.path = Path(file)
        self.hdf5 = _HDF5Log(Path(hdf5), append) if hdf5 is not None else None
        self.prefix = parameter_prefix
        self.last_step = -1
        if append and self.path.exists():
            self.last_step = repair_csv(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", newline="") as handle:
                csv.writer(handle).writerow(UNCERTAINTY_COLUMNS)
        self._handle = open(self.path, "a", newline="")
        self._writer = csv.writer(self._handle)
        self._atom_names: Optional[List[str]] = None
        self.every_step = bool(every_step)
        self._computations: Optional[List[Any]] = None

    def _recorders(self, simulation: Any) -> List[Any]:
        """The Python computations of the committee force, recording every evaluation (every_step mode)."""
        if self._computations is None:
            from advmd.openmm.forces import _COMPUTATIONS

            force = _committee(simulation, self.prefix)
            if force is None or "#" not in force.getName():
                raise ValueError(
                    "UncertaintyReporter(every_step=True) needs a committee force built with backend='python' "
                    "(the force records its evaluations); a TorchForce cannot, so use every_step=False there"
                )
            found = [c for c in list(_COMPUTATIONS) if c.name == force.getName()]
            if not found:
                raise RuntimeError(f"could not find the Python computation of force {force.getName()!r} in this process")
            for computation in found:
                computation.start_recording()
            self._computations = found
            if self._atom_names is None:
                self._atom_names = _atom_labels(simulation.topology)
        return self._computations

    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:
        steps = self.interval - simulation.currentStep % self.interval
        if self.every_step:
            self._recorders(simulation)
            return {"steps": steps, "periodic": None, "include": []}
        # Positions, unwrapped: OpenMM runs the reporters that ask for none after those that do, so without them
        # a StabilityWatchdog (unwrapped positions) added after this reporter would raise first and the row of
        # the failing step would never be written. In the same group, list order holds; one getState serves both.
        include = _include(simulation, self.prefix, ["energy", "positions"])
        return {"steps": steps, "periodic": False, "include": include}

    def _write_rows(self, rows: List[List[Any]]) -> None:
        """Append rows to the CSV (flushed) and its HDF5 twin (one append), in step order."""
        if not rows:
            return
        self._writer.writerows(rows)
        self._handle.flush()
        if self.hdf5 is not None:
            self.hdf5.write([r for r in rows if int(r[0]) > self.hdf5.last_step])
        self.last_step = int(rows[-1][0])

    def flush_pending(self) -> None:
        """every_step mode: write the rows of the evaluations recorded since the last report.

        Reports call it; call it before saving a checkpoint, so that no recorded step is
        lost if the run is killed and resumed from that checkpoint. ``close`` calls it too.
        """
        if not self.every_step or self._computations is None or self._handle.closed:
            return
        latest: Dict[int, Any] = {}
        for computation in self._computations:
            for record in computation.drain():
                latest[record[0]] = record
        rows = []
        names = self._atom_names or []
        for step in sorted(latest):
            if step <= self.last_step:
                continue
            _, time_ps, energy, values, strength = latest[step]
            atom = int(values[3])
            name = names[atom] if 0 <= atom < len(names) else ""
            rows.append([step, time_ps, energy, values[0], values[1], values[2], atom, name, values[4], strength])
        self._write_rows(rows)

    def report(self, simulation: Any, state: Any) -> None:
        from openmm import unit

        from advmd.openmm.forces import parameter_names

        if self._atom_names is None:
            self._atom_names = _atom_labels(simulation.topology)
        if self.every_step:
            self._recorders(simulation)
            self.flush_pending()
            return
        step = int(simulation.currentStep)
        if step <= self.last_step:
            return
        u = _uncertainty(simulation, state, self.prefix)
        force = _committee(simulation, self.prefix)
        strength = math.nan
        if force is not None:
            prefix = force.getName().split("committee")[0]
            name = parameter_names(prefix)["bias_strength"]
            # The state's value: the one its energies and statistics were computed with. A schedule that
            # reports before this reporter may already have changed the context's for the next step.
            parameters = state.getParameters()
            strength = parameters[name] if name in parameters else simulation.context.getParameter(name)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        if u is None:
            row = [step, time_ps, energy] + [math.nan] * 3 + [-1, "", math.nan, strength]
        else:
            atom = u.max_deviation_atom
            row = [
                step,
                time_ps,
                energy,
                u.sigma_energy,
                u.sigma_force,
                u.max_force_deviation,
                atom,
                self._atom_names[atom],
                u.bias_energy,
                strength,
            ]
        self._write_rows([row])

    def close(self) -> None:
        """Write pending every_step rows, stop the force's recording, close the files (idempotent)."""
        if not self._handle.closed:
            self.flush_pending()
        for computation in self._computations or []:
            computation.history = None
        self._handle.close()
        if self.hdf5 is not None:
            self.hdf5.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have torn down the file objects
            self.close()


class _HDF5Log:
    """Rows of :class:`UncertaintyReporter` in a PyTables table (flushed every row)."""

    def __init__(self, path: Path, append: bool) -> None:
        import tables

        class Row(tables.IsDescription):
            step = tables.Int64Col(pos=0)
            time_ps = tables.Float64Col(pos=1)
            potential_energy_kjmol = tables.Float64Col(pos=2)
            sigma_energy_kjmol = tables.Float64Col(pos=3)
            sigma_force_kjmol_nm = tables.Float64Col(pos=4)
            max_force_deviation_kjmol_nm = tables.Float64Col(pos=5)
            max_deviation_atom = tables.Int64Col(pos=6)
            max_deviation_atom_name = tables.StringCol(32, pos=7)
            bias_energy_kjmol = tables.Float64Col(pos=8)
            bias_strength = tables.Float64Col(pos=9)

        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = tables.open_file(str(path), mode="a" if append and path.exists() else "w")
        if "/uncertainty" in self.file:
            self.table = self.file.root.uncertainty
        else:
            self.table = self.file.create_table("/", "uncertainty", Row, "advmd committee uncertainty per report")
        self.last_step = int(self.table.cols.step[-1]) if self.table.nrows else -1

    def write(self, rows: List[List[Any]]) -> None:
        """Append rows (each a list of the columns) and flush once."""
        if not rows:
            return
        records = []
        for row in rows:
            record = list(row)
            record[7] = str(record[7]).encode()[:32]
            records.append(tuple(record))
        self.table.append(records)
        self.table.flush()
        self.last_step = int(rows[-1][0])

    def close(self) -> None:
        if self.file.isopen:
            self.file.close()


def repair_hdf5(path: Union[str, os.PathLike], keep_through_step: int) -> int:
    """Drop rows after ``keep_through_step`` from an HDF5 uncertainty log; return its last step."""
    import tables

    with tables.open_file(str(path), mode="a") as handle:
        table = handle.root.uncertainty
        steps = table.cols.step[:]
        keep = int(np.searchsorted(steps, keep_through_step, side="right"))
        if keep < table.nrows:
            table.remove_rows(keep, table.nrows)
        table.flush()
        return int(table.cols.step[-1]) if table.nrows else -1


def rebuild_hdf5_from_csv(csv_path: Union[str, os.PathLike], hdf5_path: Union[str, os.PathLike]) -> int:
    """Recreate an HDF5 uncertainty log from its CSV twin (after the HDF5 file was corrupted)."""
    hdf5_path = Path(hdf5_path)
    if hdf5_path.exists():
        hdf5_path.unlink()
    log = _HDF5Log(hdf5_path, append=False)
    try:
        rows = []
        with open(csv_path, newline="") as handle:
            for row in csv.DictReader(handle):
                values = [row[c] for c in UNCERTAINTY_COLUMNS]
                rows.append(
                    [int(values[0])]
                    + [float(v) for v in values[1:6]]
                    + [int(values[6]), values[7]]
                    + [float(v) for v in values[8:]]
                )
        log.write(rows)
    finally:
        log.close()
    return log.last_step


def repair_csv(path: Union[str, os.PathLike], keep_through_step: Optional[int] = None) -> int:
    """Make a reporter CSV consistent after a crash; return its last step (-1 if none).

    Drops a torn last line (a crash mid-write) and, with ``keep_through_step``, every row
    after that step (the rows a resumed run from an earlier checkpoint will write again).
    The file is rewritten atomically.
    """
    path = Path(path)
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # torn last line
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{str(path)!r} has no header; it is not an advmd reporter file")
    header, rows = lines[0], lines[1:]
    kept = []
    for line in rows:
        step = int(line.split(",", 1)[0])
        if keep_through_step is not None and step > keep_through_step:
            break
        kept.append(line)
    write_text_atomic(path, "\n".join([header] + kept) + "\n")
    return int(kept[-1].split(",", 1)[0]) if kept else -1


class StabilityWatchdog:
    """Stops a simulation cleanly when a stability criterion fails.

    On failure it writes the last good frames (an mdtraj-readable PDB of up to
    ``keep_last`` frames) next to ``failure_file``, records ``failure`` (step and
    reasons), and raises :class:`InstabilityError` out of ``simulation.step``, so
    nothing keeps integrating garbage.

    Parameters
    ----------
    checkers : sequence of Checker
    reportInterval : int
    keep_last : int
        Good frames kept in memory (a ring buffer; memory stays bounded).
    failure_file : path, optional
        Where the last good frames go (PDB) on failure.
    parameter_prefix : str, optional
    """

    def __init__(
        self,
        checkers: Sequence[Checker],
        reportInterval: int,
        keep_last: int = 10,
        failure_file: Optional[Union[str, os.PathLike]] = None,
        parameter_prefix: Optional[str] = None,
    ) -> None:
        if not checkers:
            raise ValueError("StabilityWatchdog needs at least one checker")
        for checker in checkers:
            if not isinstance(checker, Checker):
                raise TypeError(f"checkers must be Checker instances, got {type(checker).__name__}")
        self.checkers = list(checkers)
        self.interval = _check_interval(reportInterval)
        self.good: Deque[Frame] = deque(maxlen=int(keep_last))
        self.failure_file = Path(failure_file) if failure_file is not None else None
        self.prefix = parameter_prefix
        self.failure: Optional[InstabilityError] = None

    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": False, "include": _include(simulation, self.prefix, ["positions", "energy"])}

    def report(self, simulation: Any, state: Any) -> None:
        frame = frame_from_state(simulation, state, self.prefix)
        reasons = check_all(self.checkers, frame)
        if not reasons:
            self.good.append(frame)
            return
        raise self.record_failure(simulation, frame.step, reasons)

    def record_failure(self, simulation: Any, step: int, reasons: Sequence[str]) -> InstabilityError:
        """Record a failure and write the last good frames; returns the error (for the caller to raise).

        :meth:`report` calls it for a frame that fails a checker. An MD driver calls it when the
        engine itself stops between two reports (NaN positions refused by the committee force),
        so that the last good frames are kept in that case too.
        """
        self.failure = InstabilityError(int(step), list(reasons))
        logger.warning("%s", self.failure)
        if self.failure_file is not None and self.good:
            self._write_last_good(simulation.topology)
        return self.failure

    def _write_last_good(self, topology: Any) -> None:
        import mdtraj

        md_topology = mdtraj.Topology.from_openmm(topology)
        xyz = np.stack([f.positions for f in self.good]) * units.ANGSTROM_TO_NM
        trajectory = mdtraj.Trajectory(xyz, md_topology, time=np.array([f.time_ps for f in self.good]))
        self.failure_file.parent.mkdir(parents=True, exist_ok=True)
        trajectory.save_pdb(str(self.failure_file))


class FrameExtractor:
    """Sends frames whose uncertainty lies in a trust band to a dataset and a trajectory.

    DP-GEN style: below ``lower`` the committee knows the structure; above ``upper`` the
    structure has exploded; in between it is worth labelling. Extracted frames are at
    least ``min_spacing`` steps apart (decorrelation), stored as pending rows with
    provenance (source ``md``, generation, uncertainty, step), and appended to an
    mdtraj HDF5 trajectory (``.h5``). Rows and trajectory frames hold the committee's atoms
    only (its ``atoms`` subset in an ML/MM system).

    Parameters
    ----------
    dataset : advmd.data.Dataset, optional
    reportInterval : int
    lower, upper : float
        Trust band of ``metric`` in eV/Angstrom (eV for ``sigma_energy``).
    metric : {"max_force_deviation", "sigma_force", "sigma_energy"}
    min_spacing : int
        Steps between two extracted frames.
    generation : int
        Provenance generation.
    trajectory : path, optional
        ``.h5`` file the frames are appended to (DCD is not offered: mdtraj opens it to read or
        to write, never to append, so a restart could not continue it).
    run_id : str
        Recorded with each row, so a resumed run can drop the rows it will extract again.
    atoms : sequence of int, optional
        Topology indices of the atoms to store. Default: the committee's own (the ``atoms`` given
        to :func:`~advmd.openmm.add_committee_force`), else every atom.
    resume_time_ps : float, optional
        A run resumed from a checkpoint at this time: frames of ``trajectory`` after it (written
        after the checkpoint, before a crash) are dropped when the extractor is made, so that the
        resumed run does not store them twice. mdtraj stores times in float32: past about 10 ns
        with 0.5 fs steps a frame one step after the checkpoint cannot be told from one at it, so
        checkpoint at multiples of ``reportInterval`` (frames are then a report interval apart).
    """

    METRICS = ("max_force_deviation", "sigma_force", "sigma_energy")

    def __init__(
        self,
        dataset: Any,
        reportInterval: int,
        lower: float,
        upper: float,
        metric: str = "max_force_deviation",
        min_spacing: int = 0,
        generation: int = 0,
        trajectory: Optional[Union[str, os.PathLike]] = None,
        parameter_prefix: Optional[str] = None,
        run_id: str = "",
        atoms: Optional[Sequence[int]] = None,
        resume_time_ps: Optional[float] = None,
    ) -> None:
        if metric not in self.METRICS:
            raise ValueError(f"metric must be one of {self.METRICS}, got {metric!r}")
        if not (0 <= lower < upper):
            raise ValueError(f"trust band needs 0 <= lower < upper, got lower={lower!r}, upper={upper!r}")
        if int(min_spacing) != min_spacing or min_spacing < 0:
            raise ValueError(f"min_spacing must be an integer >= 0 steps, got {min_spacing!r}")
        if trajectory is not None and Path(trajectory).suffix != ".h5":
            raise ValueError(
                f"trajectory must end in .h5 (mdtraj HDF5, appendable across restarts; mdtraj.load reads it), "
                f"got {str(trajectory)!r}"
            )
        self.dataset = dataset
        self.interval = _check_interval(reportInterval)
        self.lower, self.upper, self.metric = float(lower), float(upper), metric
        self.min_spacing = int(min_spacing)
        self.generation = int(generation)
        self.trajectory_path = Path(trajectory) if trajectory is not None else None
        self.prefix = parameter_prefix
        self.run_id = run_id
        self.last_extracted = -(10**18)
        self.extracted: int = 0
        self._trajectory_file: Any = None
        self.atoms = None if atoms is None else [int(a) for a in atoms]
        self.resume_time_ps = None if resume_time_ps is None else float(resume_time_ps)
        if self.resume_time_ps is not None and self.trajectory_path is not None and self.trajectory_path.exists():
            self._truncate_trajectory()

    def _truncate_trajectory(self) -> None:
        """Drop the frames after ``resume_time_ps`` now, not at the first new frame: a resumed segment that extracts
        nothing before its next checkpoint and crash would otherwise keep them past a later, larger cut."""
        import mdtraj

        kept = mdtraj.load(str(self.trajectory_path))
        kept = kept[kept.time <= self.resume_time_ps + 1e-9]
        if len(kept):
            kept.save_hdf5(str(self.trajectory_path), force_overwrite=True)
        else:
            self.trajectory_path.unlink()

    def describeNextReport(self, simulation: Any) -> Dict[str, Any]:
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": False, "include": _include(simulation, self.prefix, ["positions", "energy"])}

    def report(self, simulation: Any, state: Any) -> None:
        frame = frame_from_state(simulation, state, self.prefix)
        value = getattr(frame, self.metric)
        if not (math.isfinite(value) and self.lower <= value < self.upper):
            return
        if frame.step - self.last_extracted < self.min_spacing:
            return
        self.last_extracted = frame.step
        self.extracted += 1
        selected = self._atoms(simulation)
        positions = frame.positions if selected is None else frame.positions[selected]
        if self.dataset is not None:
            from ase import Atoms

            from advmd.data import Provenance

            topology_atoms = list(simulation.topology.atoms())
            chosen = topology_atoms if selected is None else [topology_atoms[k] for k in selected]
            numbers = [a.element.atomic_number for a in chosen]
            atoms = Atoms(numbers=numbers, positions=positions)
            if simulation.system.usesPeriodicBoundaryConditions():
                from openmm import unit

                box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM
                atoms.set_cell(np.asarray(box))
                atoms.set_pbc(True)
            provenance = Provenance(
                "md",
                generation=self.generation,
                uncertainty=float(value),
                selection={
                    "step": frame.step,
                    "time_ps": frame.time_ps,
                    "metric": self.metric,
                    "band": [self.lower, self.upper],
                    "run": self.run_id,
                },
            )
            self.dataset.add([atoms], provenance)
        if self.trajectory_path is not None:
            self._append(simulation.topology, frame.time_ps, positions, selected)

    def _atoms(self, simulation: Any) -> Optional[List[int]]:
        if self.atoms is not None:
            return self.atoms
        force = _committee(simulation, self.prefix)
        registry = getattr(simulation.system, "_advmd_committee_atoms", {})
        return None if force is None else registry.get(force.getName())

    def _append(self, topology: Any, time_ps: float, positions: np.ndarray, selected: Optional[List[int]]) -> None:
        import mdtraj

        xyz = positions[None] * units.ANGSTROM_TO_NM
        if self._trajectory_file is None:
            self.trajectory_path.parent.mkdir(parents=True, exist_ok=True)
            self._trajectory_file = mdtraj.formats.HDF5TrajectoryFile(str(self.trajectory_path), mode="a")
            if self._trajectory_file.topology is None:
                md_topology = mdtraj.Topology.from_openmm(topology)
                self._trajectory_file.topology = md_topology if selected is None else md_topology.subset(selected)
        self._trajectory_file.write(xyz, time=np.array([time_ps]))
        self._trajectory_file.flush()

    def close(self) -> None:
        if self._trajectory_file is not None:
            self._trajectory_file.close()
            self._trajectory_file = None
