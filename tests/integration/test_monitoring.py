"""Monitoring reporters: watchdog stops broken runs and stays quiet on good ones; logs and extraction."""

import csv
import math
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from ase import Atoms
from openmm import app, unit

from advmd import units
from advmd.committee import CommitteePotential, TorchScriptCommittee, make_bias
from advmd.data import Dataset
from advmd.md.stability import (
    BondLengthChecker,
    DistanceRangeChecker,
    Frame,
    MinimumDistanceChecker,
    TemperatureChecker,
    UncertaintyChecker,
    make_checker,
)
from advmd.openmm import create_system, read_uncertainty
from advmd.openmm.reporters import FrameExtractor, InstabilityError, StabilityWatchdog, UncertaintyReporter, repair_csv
from advmd.systems import amber14_vacuum_system
from tests.conftest import small_potential


class Collapse(torch.nn.Module):
    """A broken 'potential': every atom is pulled to the centroid (atoms collapse together)."""

    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, cell: Optional[torch.Tensor]) -> torch.Tensor:
        return self.k * ((positions - positions.mean(0)) ** 2).sum()


def simulation_for(pdb, system, seed=1, timestep_fs=0.5):
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, timestep_fs * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    return simulation


def reference_angstrom(pdb):
    return pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM


def test_watchdog_stops_a_collapsing_model_within_one_report_interval(alanine_pdb, tmp_path):
    committee = TorchScriptCommittee([Collapse(0.05), Collapse(0.06)], species=[1, 6, 7, 8], cutoff=0.0)
    system = create_system(alanine_pdb.topology, CommitteePotential(committee, make_bias("none", 2)))
    simulation = simulation_for(alanine_pdb, system)
    simulation.context.setVelocities(np.zeros((22, 3)))  # start at rest: the collapse, not thermal motion, breaks it
    checkers = [
        BondLengthChecker.from_topology(alanine_pdb.topology, reference_angstrom(alanine_pdb)),
        MinimumDistanceChecker.from_topology(alanine_pdb.topology, 0.7),
    ]
    watchdog = StabilityWatchdog(checkers, reportInterval=10, failure_file=tmp_path / "last_good.pdb")
    simulation.reporters.append(watchdog)
    with pytest.raises(InstabilityError) as caught:
        simulation.step(20000)
    failure = caught.value
    assert simulation.currentStep == failure.step < 20000  # stopped at once, nothing integrated after
    assert len(watchdog.good) >= 3  # it ran fine for a while first
    assert failure.step - watchdog.good[-1].step == 10  # every earlier report was fine: caught within one interval
    assert any("bond" in r or "closer than" in r for r in failure.reasons)
    import mdtraj

    last_good = mdtraj.load(str(tmp_path / "last_good.pdb"))
    assert last_good.n_frames == len(watchdog.good) and last_good.n_atoms == 22


def test_the_log_has_the_row_of_the_step_the_watchdog_stops_at(alanine_pdb, tmp_path):
    """OpenMM reports to position-free reporters last: the log's row of the failing step came after the watchdog's
    exception, so it was never written."""
    committee = TorchScriptCommittee([Collapse(0.05), Collapse(0.06)], species=[1, 6, 7, 8], cutoff=0.0)
    system = create_system(alanine_pdb.topology, CommitteePotential(committee, make_bias("none", 2)))
    simulation = simulation_for(alanine_pdb, system)
    simulation.context.setVelocities(np.zeros((22, 3)))
    log = UncertaintyReporter(tmp_path / "u.csv", 10)
    simulation.reporters.append(log)
    checkers = [MinimumDistanceChecker.from_topology(alanine_pdb.topology, 0.7)]
    simulation.reporters.append(StabilityWatchdog(checkers, reportInterval=10))
    with pytest.raises(InstabilityError) as caught:
        simulation.step(20000)
    log.close()
    steps = [int(row["step"]) for row in csv.DictReader(open(tmp_path / "u.csv"))]
    assert steps[-1] == caught.value.step and steps == list(range(10, caught.value.step + 1, 10))


def test_watchdog_is_quiet_on_a_long_stable_classical_run(alanine_pdb):
    system = amber14_vacuum_system(alanine_pdb.topology, constraints=app.HBonds)
    simulation = simulation_for(alanine_pdb, system, timestep_fs=2.0)
    checkers = [
        BondLengthChecker.from_topology(alanine_pdb.topology, reference_angstrom(alanine_pdb)),
        MinimumDistanceChecker.from_topology(alanine_pdb.topology, 0.7),
        make_checker("finite"),
        TemperatureChecker(300.0, factor=2.0, window=5),
    ]
    watchdog = StabilityWatchdog(checkers, reportInterval=50)
    simulation.reporters.append(watchdog)
    simulation.step(5000)  # 10 ps at 300 K
    assert watchdog.failure is None and len(watchdog.good) == 10


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_uncertainty_reporter_rows_equal_direct_readout(alanine_pdb, tmp_path, backend):
    system = create_system(alanine_pdb.topology, small_potential("udd", width=1.0), backend=backend, bias_strength=5.0)
    simulation = simulation_for(alanine_pdb, system)
    reporter = UncertaintyReporter(tmp_path / "u.csv", reportInterval=5)
    simulation.reporters.append(reporter)
    simulation.step(20)
    reporter.close()
    rows = list(csv.DictReader(open(tmp_path / "u.csv")))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    direct = read_uncertainty(simulation.context)
    last = rows[-1]
    assert float(last["sigma_force_kjmol_nm"]) == pytest.approx(direct.sigma_force, rel=1e-9)
    assert float(last["bias_energy_kjmol"]) == pytest.approx(direct.bias_energy, rel=1e-9)
    assert int(last["max_deviation_atom"]) == direct.max_deviation_atom
    assert last["max_deviation_atom_name"].count(":") == 1
    assert float(last["bias_strength"]) == 5.0


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_a_row_logs_the_strength_its_bias_energy_was_computed_with(alanine_pdb, tmp_path, backend):
    """A schedule that reports first switches the strength at step 2 for the next step; the reporter's row for step 2
    keeps the strength of that step's evaluation (0, bias 0), and step 3 has the new one."""
    from advmd.openmm import StepSchedule

    system = create_system(alanine_pdb.topology, small_potential("udd", width=1.0), backend=backend, bias_strength=0.0)
    simulation = simulation_for(alanine_pdb, system)
    simulation.reporters.append(StepSchedule([(0, 0.0), (2, 30.0)]))
    reporter = UncertaintyReporter(tmp_path / "u.csv", reportInterval=1)
    simulation.reporters.append(reporter)
    simulation.step(3)
    reporter.close()
    rows = {int(r["step"]): r for r in csv.DictReader(open(tmp_path / "u.csv"))}
    assert float(rows[2]["bias_strength"]) == 0.0 and float(rows[2]["bias_energy_kjmol"]) == 0.0
    assert float(rows[3]["bias_strength"]) == 30.0 and float(rows[3]["bias_energy_kjmol"]) < 0.0


def test_every_step_log_equals_per_step_reports_without_extra_evaluations(alanine_pdb, tmp_path):
    """every_step=True: a row for each step from the force's own evaluations, equal to reading every step."""
    from advmd.openmm.forces import _COMPUTATIONS

    potential = small_potential("udd", width=1.0)
    runs = {}
    for name, options in (("every", dict(reportInterval=5, every_step=True)), ("each", dict(reportInterval=1))):
        system = create_system(alanine_pdb.topology, potential, backend="python", bias_strength=5.0)
        force_name = [f.getName() for f in system.getForces() if "committee" in f.getName()][0]
        simulation = simulation_for(alanine_pdb, system, seed=3)
        reporter = UncertaintyReporter(tmp_path / f"{name}.csv", **options)
        simulation.reporters.append(reporter)
        simulation.step(20)
        reporter.close()
        calls = sum(c.calls for c in list(_COMPUTATIONS) if c.name == force_name)
        evaluations = sum(c.evaluations for c in list(_COMPUTATIONS) if c.name == force_name)
        runs[name] = ({int(r["step"]): r for r in csv.DictReader(open(tmp_path / f"{name}.csv"))}, calls, evaluations)
    every, every_calls, every_evaluations = runs["every"]
    each, each_calls, each_evaluations = runs["each"]
    assert sorted(every) == list(range(20))  # the forces of step 20 are evaluated by step 21
    assert sorted(each) == list(range(1, 21))
    # the per-step reports of the second run cost one force call each, the every_step log none; neither
    # costs a model evaluation (the force keeps its last result): one per position set either way
    assert each_calls - every_calls == 20 and every_calls <= 21
    assert (every_evaluations, each_evaluations) == (20, 21)  # x0..x19 by the steps; the last report also reads x20
    for step in range(1, 20):
        for column in ("potential_energy_kjmol", "sigma_energy_kjmol", "sigma_force_kjmol_nm", "bias_energy_kjmol"):
            assert float(every[step][column]) == pytest.approx(float(each[step][column]), rel=1e-10), (step, column)
        assert every[step]["max_deviation_atom_name"] == each[step]["max_deviation_atom_name"]
        assert float(every[step]["time_ps"]) == pytest.approx(float(each[step]["time_ps"]))
        assert float(every[step]["bias_strength"]) == 5.0
    assert len({every[k]["sigma_force_kjmol_nm"] for k in every}) == 20  # the values move along the trajectory

    with pytest.raises(ValueError, match="exceeds the 200000 evaluations a force keeps between reports"):
        UncertaintyReporter(tmp_path / "long.csv", reportInterval=10**6, every_step=True)
    assert not (tmp_path / "long.csv").exists()  # refused before creating anything
    torch_system = create_system(alanine_pdb.topology, potential, backend="torch")
    simulation = simulation_for(alanine_pdb, torch_system)
    simulation.reporters.append(UncertaintyReporter(tmp_path / "t.csv", reportInterval=5, every_step=True))
    with pytest.raises(ValueError, match=r"every_step=True\) needs a committee force built with backend='python'"):
        simulation.step(5)


def test_every_step_log_keeps_one_record_a_step_when_other_reporters_call_the_force(alanine_pdb, tmp_path, monkeypatch):
    """A StateDataReporter reading the energy every step adds force calls at steps already recorded: the log keeps
    one record per step, and a record buffer of 8 suffices for a report interval of 8 (rows were lost)."""
    import io

    from advmd.openmm.forces import CommitteeComputation

    monkeypatch.setattr(CommitteeComputation, "HISTORY_LIMIT", 8)
    system = create_system(alanine_pdb.topology, small_potential("udd", width=1.0), backend="python", bias_strength=1.0)
    simulation = simulation_for(alanine_pdb, system)
    reporter = UncertaintyReporter(tmp_path / "u.csv", reportInterval=8, every_step=True)
    simulation.reporters.append(app.StateDataReporter(io.StringIO(), 1, potentialEnergy=True))
    simulation.reporters.append(reporter)
    simulation.step(16)
    reporter.close()
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "u.csv"))] == list(range(17))


def test_restart_after_a_crash_reproduces_the_reporter_file(alanine_pdb, tmp_path):
    potential = small_potential("udd", width=1.0)

    def fresh():
        return simulation_for(alanine_pdb, create_system(alanine_pdb.topology, potential, bias_strength=5.0), seed=7)

    reference = fresh()
    reporter = UncertaintyReporter(tmp_path / "reference.csv", reportInterval=5)
    reference.reporters.append(reporter)
    reference.step(40)
    reporter.close()

    crashed = fresh()
    reporter = UncertaintyReporter(tmp_path / "run.csv", reportInterval=5)
    crashed.reporters.append(reporter)
    crashed.step(20)
    crashed.saveCheckpoint(str(tmp_path / "run.chk"))
    crashed.step(13)  # rows up to 30 written after the checkpoint...
    reporter.close()
    with open(tmp_path / "run.csv", "a") as handle:
        handle.write("35,0.0175,-1")  # ...and a row torn by kill -9

    resumed = fresh()
    resumed.loadCheckpoint(str(tmp_path / "run.chk"))
    assert resumed.currentStep == 20
    assert repair_csv(tmp_path / "run.csv", keep_through_step=resumed.currentStep) == 20
    reporter = UncertaintyReporter(tmp_path / "run.csv", reportInterval=5, append=True)
    resumed.reporters.append(reporter)
    resumed.step(20)
    reporter.close()
    assert (tmp_path / "run.csv").read_text() == (tmp_path / "reference.csv").read_text()


def test_frame_extractor_keeps_band_and_spacing(alanine_pdb, tmp_path):
    potential = small_potential("none")
    log = tmp_path / "u.csv"
    first = simulation_for(alanine_pdb, create_system(alanine_pdb.topology, potential), seed=3)
    reporter = UncertaintyReporter(log, reportInterval=4)
    first.reporters.append(reporter)
    first.step(200)
    reporter.close()
    values = (
        np.array([float(r["max_force_deviation_kjmol_nm"]) for r in csv.DictReader(open(log))])
        / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
    )
    lower, upper = np.percentile(values, [20, 80])

    dataset = Dataset(tmp_path / "frames.db")
    second = simulation_for(alanine_pdb, create_system(alanine_pdb.topology, potential), seed=3)
    extractor = FrameExtractor(dataset, 4, lower, upper, min_spacing=12, generation=2, trajectory=tmp_path / "frames.h5")
    second.reporters.append(extractor)
    second.step(200)
    extractor.close()
    rows = list(dataset.rows())
    assert len(rows) == extractor.extracted >= 3
    steps = [r.data["selection"]["step"] for r in rows]
    assert all(b - a >= 12 for a, b in zip(steps, steps[1:]))
    assert all(lower <= r.uncertainty < upper and r.source == "md" and r.generation == 2 for r in rows)
    import mdtraj

    assert mdtraj.load(str(tmp_path / "frames.h5")).n_frames == len(rows)


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_frame_extractor_stores_the_committees_atoms_and_a_resume_does_not_duplicate_frames(alanine_pdb, tmp_path, backend):
    """ML/MM: the committee acts on atoms 4..15; rows and trajectory frames hold those 12 atoms. A resumed run drops
    the trajectory frames written after its checkpoint time before it appends."""
    import mdtraj

    atoms = list(range(4, 16))
    potential = small_potential("none")
    numbers = [a.element.atomic_number for a in alanine_pdb.topology.atoms()]
    dataset = Dataset(tmp_path / "frames.db")
    path = tmp_path / "frames.h5"
    simulation = simulation_for(alanine_pdb, create_system(alanine_pdb.topology, potential, backend=backend, atoms=atoms))
    extractor = FrameExtractor(dataset, 5, 0.0, 1e9, trajectory=path)
    simulation.reporters.append(extractor)
    simulation.step(20)
    extractor.close()
    rows = list(dataset.rows())
    assert len(rows) == 4 and all(list(r.numbers) == [numbers[k] for k in atoms] for r in rows)
    state = simulation.context.getState(positions=True)
    np.testing.assert_allclose(rows[-1].positions, reference_angstrom_of(state)[atoms], atol=1e-6)
    written = mdtraj.load(str(path))
    assert written.n_atoms == 12 and written.n_frames == 4
    # resume from a checkpoint at the second frame's time: frames 3 and 4 go, the new one follows frame 2
    resumed = FrameExtractor(None, 5, 0.0, 1e9, trajectory=path, resume_time_ps=float(written.time[1]))
    simulation.reporters[:] = [resumed]
    simulation.step(5)
    resumed.close()
    again = mdtraj.load(str(path))
    assert again.n_frames == 3 and np.all(np.diff(again.time) > 0)
    np.testing.assert_allclose(again.xyz[:2], written.xyz[:2], atol=1e-6)


def test_a_resumed_extractor_drops_later_frames_even_if_it_extracts_nothing(alanine_pdb, tmp_path):
    """Cut when the extractor is made: a resumed segment that extracts nothing and crashes again after its next
    checkpoint must not keep the first segment's frames from after the first checkpoint."""
    import mdtraj

    path = tmp_path / "frames.h5"
    topology = mdtraj.Topology.from_openmm(alanine_pdb.topology)
    xyz = np.repeat(alanine_pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[None], 3, axis=0)
    mdtraj.Trajectory(xyz, topology, time=np.array([1.0, 2.0, 3.0])).save_hdf5(str(path))
    FrameExtractor(None, 10, 0.0, 1.0, trajectory=path, resume_time_ps=2.0)
    assert mdtraj.load(str(path)).time.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("tilt", [0.0, 2.0], ids=["orthorhombic", "triclinic"])
def test_minimum_distance_sees_atoms_that_meet_across_the_box_faces(tilt):
    """Unwrapped positions 9.7 A apart in x are 0.3 A apart through the periodic boundary of a 10 A box."""
    positions = np.array([[0.1, 5.0, 5.0], [9.8, 5.0, 5.0], [5.0, 1.0, 1.0]])
    cell = np.array([[10.0, 0.0, 0.0], [tilt, 10.0, 0.0], [0.0, 0.0, 10.0]])
    checker = MinimumDistanceChecker(0.7)
    assert checker.check(Frame(0, 0.0, positions, 0.0)) is None  # open boundaries: far apart
    message = checker.check(Frame(0, 0.0, positions, 0.0, cell=cell))
    assert message == "atoms 0 and 1 are 0.300 A apart, closer than the minimum 0.7 A"
    assert MinimumDistanceChecker(0.7, [(0, 1)]).check(Frame(0, 0.0, positions, 0.0, cell=cell)) is None  # bonded


def test_frames_of_a_periodic_simulation_carry_its_box():
    from advmd.openmm.reporters import frame_from_state
    from tests.integration.test_openmm_force import water_topology
    from tests.unit.committee.test_potential import water_box

    positions, numbers = water_box(n_molecules=24, side=10.0)
    topology, box = water_topology(numbers)
    system = create_system(topology, small_potential("none"))
    simulation = app.Simulation(topology, system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions.numpy() * 0.1)
    frame = frame_from_state(simulation, simulation.context.getState(positions=True, energy=True, parameterDerivatives=True))
    np.testing.assert_allclose(frame.cell, np.array([[v.x, v.y, v.z] for v in box.value_in_unit(unit.nanometer)]) * 10.0)


def reference_angstrom_of(state):
    return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM


def test_ammonia_rule_and_other_criteria_are_expressible():
    numbers = [7, 1, 1, 1]
    rule = DistanceRangeChecker.element_pairs(numbers, 1, 1, 0.80, 2.55)
    assert len(rule.pairs) == 3
    good = np.array([[0, 0, 0.12], [0.94, 0, -0.27], [-0.47, 0.81, -0.27], [-0.47, -0.81, -0.27]])
    assert rule.check(Frame(0, 0.0, good, 0.0)) is None
    squeezed = good.copy()
    squeezed[2] = squeezed[1] + [0.1, 0.5, 0.0]
    assert "outside [0.8, 2.55]" in rule.check(Frame(1, 0.0, squeezed, 0.0))
    floor = make_checker("energy_floor", minimum=-1.0)
    assert floor.check(Frame(2, 0.0, good, -0.5)) is None
    assert "below the known global minimum -1.0 eV" in floor.check(Frame(2, 0.0, good, -1.5))
    limit = UncertaintyChecker(0.5)
    assert limit.check(Frame(3, 0.0, good, 0.0, max_force_deviation=0.3, max_deviation_atom=1)) is None
    assert "exceeds the hard limit 0.5" in limit.check(Frame(3, 0.0, good, 0.0, max_force_deviation=0.7, max_deviation_atom=1))
    finite = make_checker("finite")
    assert finite.check(Frame(4, 0.0, good, -0.5)) is None
    assert finite.check(Frame(4, 0.0, good, math.nan)) == "potential energy is nan"
    assert len(Atoms("NH3", positions=good)) == 4  # the frames above are ammonia geometries (N, 3 H)


def test_non_finite_frames_fail_every_criterion_and_never_crash_a_checker(alanine_pdb):
    """A diverged frame is a failure, never an exception or a pass: NaN positions with geometric checkers, infinite
    temperature, non-finite committee uncertainty, NaN bond lengths."""
    from advmd.md.stability import EnergyFloorChecker, FiniteChecker, check_all

    good = reference_angstrom(alanine_pdb)
    diverged = good.copy()
    diverged[3, 1] = math.nan
    geometric = [
        BondLengthChecker.from_topology(alanine_pdb.topology, good),
        MinimumDistanceChecker.from_topology(alanine_pdb.topology, 0.7),
        DistanceRangeChecker([(0, 3)], 0.5, 5.0),
    ]
    for checker in geometric:  # each on its own names the problem
        assert checker.check(Frame(0, 0.0, good, 0.0)) is None
        assert checker.check(Frame(1, 0.0, diverged, 0.0)) is not None
    # Together, with or without the finite criterion listed: the finite reason alone.
    for checkers in (geometric, [FiniteChecker()] + geometric):
        assert check_all(checkers, Frame(1, 0.0, diverged, 0.0)) == ["finite: positions contain NaN or infinite values"]
    assert check_all(geometric, Frame(2, 0.0, good, math.inf)) == ["finite: potential energy is inf"]
    temperature = TemperatureChecker(300.0, 2.0, window=3)
    assert temperature.check(Frame(3, 0.0, good, 0.0, temperature=math.nan)) is None  # not measured
    assert "diverged" in temperature.check(Frame(4, 0.0, good, 0.0, temperature=math.inf))
    limit = UncertaintyChecker(0.5)
    assert limit.check(Frame(5, 0.0, good, 0.0)) is None  # no committee: nothing measured
    for value in (math.nan, math.inf):
        assert limit.check(Frame(6, 0.0, good, 0.0, max_force_deviation=value, max_deviation_atom=0)) is not None
    assert EnergyFloorChecker(-1.0).check(Frame(7, 0.0, good, math.nan)) is not None


def test_energy_floor_compares_the_energy_without_the_uncertainty_bias(alanine_pdb):
    """A UDD bias lowers the total energy where the committee disagrees; the floor judges the committee's own energy."""
    from advmd.md.stability import EnergyFloorChecker
    from advmd.openmm import parameter_names
    from advmd.openmm.reporters import frame_from_state

    potential = small_potential("udd", width=0.01)
    system = create_system(alanine_pdb.topology, potential, backend="torch", bias_strength=0.0)
    simulation = simulation_for(alanine_pdb, system)
    simulation.context.setParameter(parameter_names()["bias_strength"], 50.0)  # kJ/mol
    state = simulation.context.getState(positions=True, energy=True, parameterDerivatives=True)
    frame = frame_from_state(simulation, state)
    assert frame.bias_energy < -0.01  # eV: the bias is on and negative
    # the committee potential's own bias energy at these positions and strength (eV), not the reporter's path
    positions = torch.tensor(frame.positions, dtype=torch.float64)
    numbers = torch.tensor([a.element.atomic_number for a in alanine_pdb.topology.atoms()])
    direct = potential(positions, numbers, None, torch.tensor(50.0 * units.KJ_PER_MOL_TO_EV, dtype=torch.float64))
    np.testing.assert_allclose(frame.bias_energy, float(direct["bias_energy"]), rtol=1e-9)
    floor = frame.potential_energy - 0.5 * frame.bias_energy  # between the biased and the unbiased energy
    assert EnergyFloorChecker(floor).check(frame) is None
    assert "below the known global minimum" in EnergyFloorChecker(floor - 1.5 * frame.bias_energy).check(frame)


def test_bad_monitoring_configuration_fails_before_any_step(tmp_path):
    with pytest.raises(ValueError, match="unknown stability criterion 'vibes'"):
        make_checker("vibes")
    with pytest.raises(ValueError, match="reportInterval must be a positive integer"):
        UncertaintyReporter(tmp_path / "u.csv", reportInterval=-5)
    with pytest.raises(ValueError, match="trust band needs 0 <= lower < upper"):
        FrameExtractor(None, 10, 0.5, 0.2)
    with pytest.raises(ValueError, match="needs at least one checker"):
        StabilityWatchdog([], 10)
    for name in ("x.xyz", "x.dcd"):  # DCD: mdtraj cannot append to one, so a restart could not continue it
        with pytest.raises(ValueError, match="trajectory must end in .h5"):
            FrameExtractor(None, 10, 0.1, 0.2, trajectory=tmp_path / name)
