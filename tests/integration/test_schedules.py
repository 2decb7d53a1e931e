"""Bias schedules change the strength parameter as specified, through context.setParameter, during a run."""

import numpy as np
import openmm
import pytest
from openmm import app, unit

from advmd import units
from advmd.openmm import AdaptiveBiasStrength, StepSchedule, UncertaintyRamp, create_system, parameter_names
from tests.conftest import small_potential

STRENGTH = parameter_names()["bias_strength"]


def one_particle_simulation(expression, parameters):
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("X", chain)
    topology.addAtom("X", app.Element.getBySymbol("Ar"), residue)
    system = openmm.System()
    system.addParticle(40.0)
    force = openmm.CustomExternalForce(expression)
    for name, value in parameters.items():
        force.addGlobalParameter(name, value)
    force.addParticle(0, [])
    system.addForce(force)
    simulation = app.Simulation(topology, system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions([[0.3, -0.2, 0.1]])
    return simulation


def test_step_schedule_applies_each_strength_at_its_step():
    simulation = one_particle_simulation("0.5*k*(x^2+y^2+z^2) + s*x", {"k": 100.0, "s": 0.0})
    schedule = StepSchedule([(0, 1.0), (10, 2.0), (25, 5.0)], parameter="s")
    schedule.apply(simulation)
    simulation.reporters.append(schedule)
    seen = []
    for _ in range(40):
        simulation.step(1)
        seen.append((simulation.currentStep, simulation.context.getParameter("s")))
    assert schedule.history == [(0, 1.0), (10, 2.0), (25, 5.0)]
    # the strength for step t+1 is set once step t is done: 1 through step 9, 2 from 10 to 24, 5 from 25
    assert seen == [(t, 1.0 if t < 10 else 2.0 if t < 25 else 5.0) for t in range(1, 41)]
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        StepSchedule([(-1, 1.0)], parameter="s")
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        StepSchedule([(0, float("nan"))], parameter="s")


def test_adaptive_controller_sets_the_exact_strength_on_a_linear_bias():
    # F_unbiased = -k r, F_bias = -s c: with smoothing 1 the new s gives |F_bias| = ratio |F_unbiased| exactly
    k, c = 100.0, np.array([3.0, 4.0, 0.0])
    simulation = one_particle_simulation("0.5*k*(x^2+y^2+z^2) + s*(3*x+4*y)", {"k": k, "s": 0.0})
    controller = AdaptiveBiasStrength(5, target_ratio=0.2, smoothing=1.0, parameter="s")
    simulation.reporters.append(controller)
    simulation.step(5)
    position = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value[0]
    expected = 0.2 * k * np.linalg.norm(position) / np.linalg.norm(c)
    assert simulation.context.getParameter("s") == pytest.approx(expected, rel=1e-9)
    unbiased, slope = controller.measure(simulation)
    assert simulation.context.getParameter("s") * slope / unbiased == pytest.approx(0.2, rel=1e-9)
    assert simulation.context.getParameter("s") == pytest.approx(expected, rel=1e-9)  # measuring restores the strength


def alanine_simulation(alanine_pdb, form, strength, **params):
    system = create_system(alanine_pdb.topology, small_potential(form, **params), bias_strength=strength)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtoseconds)
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(alanine_pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(alanine_pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return simulation


def test_uncertainty_ramp_raises_the_strength_after_each_patience_period_without_a_new_frame(alanine_pdb):
    simulation = alanine_simulation(alanine_pdb, "udd", 0.0, width=1.0)
    ramp = UncertaintyRamp(5, threshold=1e6, patience=10, increment=1.5, maximum=4.0)
    simulation.reporters.append(ramp)
    simulation.step(40)
    assert ramp.history == [(10, 1.5), (20, 3.0), (30, 4.0)]
    assert simulation.context.getParameter(STRENGTH) == 4.0 and ramp.found == 0

    simulation = alanine_simulation(alanine_pdb, "udd", 0.0, width=1.0)
    always = UncertaintyRamp(5, threshold=0.0, patience=10, increment=1.5, maximum=4.0)
    simulation.reporters.append(always)
    simulation.step(40)
    assert always.history == [] and always.found == 8
    with pytest.raises(ValueError, match="multiple of reportInterval"):
        UncertaintyRamp(5, threshold=0.1, patience=12, increment=1.0, maximum=2.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        UncertaintyRamp(5, threshold=0.1, patience=10, increment=1.0, maximum=2.0, metric="entropy")


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_uncertainty_ramp_reads_the_statistics_of_the_current_step(alanine_pdb, backend):
    """The ramp's reading at a report is the committee's at that step's positions, on both force paths (the
    PythonForce keeps the statistics of its last evaluation: the state must make it evaluate these positions)."""
    from advmd.openmm import read_uncertainty

    readings = []

    class Spy(UncertaintyRamp):
        def _reading(self, simulation, state):
            value = super()._reading(simulation, state)
            fresh = read_uncertainty(simulation.context).sigma_energy * units.KJ_PER_MOL_TO_EV
            readings.append((value, fresh))
            return value

    system = create_system(alanine_pdb.topology, small_potential("udd", width=1.0), backend=backend, bias_strength=0.3)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtoseconds)
    simulation = app.Simulation(alanine_pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(alanine_pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    simulation.reporters.append(Spy(1, threshold=1e9, patience=1000, increment=0.0, maximum=1.0, metric="sigma_energy"))
    simulation.step(4)
    assert len(readings) == 4 and len({value for value, _ in readings}) == 4  # the statistics move step by step
    for value, fresh in readings:
        assert value == pytest.approx(fresh, rel=1e-12)


def test_adaptive_controller_holds_the_hal_force_ratio_during_md(alanine_pdb):
    simulation = alanine_simulation(alanine_pdb, "hal", 0.0)
    controller = AdaptiveBiasStrength(10, target_ratio=0.1, smoothing=0.2, probe=0.01)
    simulation.reporters.append(controller)
    simulation.step(300)
    assert len(controller.readings) == 30 and controller.readings[0][1] == 0.0  # starts unbiased
    # the time-averaged |F_bias| / |F_unbiased| holds the target once the averages have settled
    assert controller.time_averaged_ratio(skip=5) == pytest.approx(0.1, rel=0.15)  # measured 0.109
    strengths = np.array([strength for _, strength, _, _ in controller.readings[5:]])
    assert np.all(strengths > 0) and strengths.std() < 0.5 * strengths.mean()
