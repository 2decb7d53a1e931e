"""Conservative-force diagnostics (seed 004): Jacobian asymmetry and NVE drift, with known answers."""

import numpy as np
import openmm
import pytest
import torch
from ase import Atoms
from openmm import unit

from advmd.diagnostics import committee_force_function, force_jacobian, jacobian_asymmetry, labeler_asymmetry, nve_drift
from tests.conftest import small_potential

RNG = np.random.default_rng(0)
POSITIONS = RNG.normal(size=(5, 3))


def spring_and_swirl(k, omega):
    """F = -k R + omega z x R per atom: conservative for omega = 0, purely rotational for k = 0."""

    def forces(positions):
        swirl = torch.stack([-positions[:, 1], positions[:, 0], torch.zeros_like(positions[:, 0])], dim=1)
        return -k * positions + omega * swirl

    return forces


@pytest.mark.parametrize("method", ["autograd", "finite-difference"])
def test_lambda_is_zero_for_a_harmonic_model_and_one_for_a_rotational_field(method):
    def wrap(function):
        if method == "autograd":
            return function
        return lambda p: function(torch.as_tensor(p)).numpy()

    harmonic = force_jacobian(wrap(spring_and_swirl(2.0, 0.0)), POSITIONS, method)
    rotational = force_jacobian(wrap(spring_and_swirl(0.0, 1.5)), POSITIONS, method)
    np.testing.assert_allclose(harmonic, -2.0 * np.eye(15), atol=1e-8)
    assert jacobian_asymmetry(harmonic) == pytest.approx(0.0, abs=1e-10)
    assert jacobian_asymmetry(rotational) == pytest.approx(1.0, abs=1e-10)


def test_lambda_of_a_mixed_field_matches_the_closed_form():
    k, omega = 2.0, 0.7
    jac = force_jacobian(spring_and_swirl(k, omega), POSITIONS)
    # per atom J = -k I3 + omega [[0,-1,0],[1,0,0],[0,0,0]]: ||J_anti||^2 = 2 omega^2, ||J||^2 = 3 k^2 + 2 omega^2
    assert jacobian_asymmetry(jac) == pytest.approx(np.sqrt(2 * omega**2 / (3 * k**2 + 2 * omega**2)), rel=1e-12)


def test_zero_jacobian_is_conservative_and_bad_jacobians_are_refused():
    assert jacobian_asymmetry(np.zeros((6, 6))) == 0.0
    with pytest.raises(ValueError, match="square"):
        jacobian_asymmetry(np.zeros((6, 3)))
    with pytest.raises(ValueError, match="NaN"):
        jacobian_asymmetry(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="method must be"):
        force_jacobian(spring_and_swirl(1, 0), POSITIONS, method="complex-step")
    with pytest.raises(TypeError, match="finite-difference"):
        force_jacobian(lambda p: p.detach().numpy(), POSITIONS, method="autograd")


@pytest.mark.parametrize("form,params,strength", [("none", {}, 0.0), ("udd", {"width": 1.0}, 0.3), ("hal", {}, 0.2)])
def test_the_committee_with_its_bias_is_conservative(alanine, form, params, strength):
    positions, numbers = alanine
    potential = small_potential(form, **params)
    function = committee_force_function(potential, numbers.numpy(), bias_strength=strength)
    jac = force_jacobian(function, positions.numpy())
    assert jacobian_asymmetry(jac) < 1e-10
    # the autograd Jacobian equals central differences of the forces (same model, independent route)
    numeric = force_jacobian(
        lambda p: function(torch.as_tensor(p)).detach().numpy(), positions.numpy()[:], "finite-difference", 1e-4
    )
    np.testing.assert_allclose(jac, numeric, atol=2e-4 * np.abs(jac).max())


def test_a_force_field_labeler_is_conservative_by_finite_differences(alanine_pdb):
    from advmd.labelers import make_labeler

    atoms = Atoms(
        numbers=[a.element.atomic_number for a in alanine_pdb.topology.atoms()],
        positions=alanine_pdb.getPositions(asNumpy=True)._value * 10.0,
    )
    (value,) = labeler_asymmetry(make_labeler("amber14"), [atoms], step=1e-3)
    assert value < 1e-5


def _particles(n, mass=12.0):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(mass)
    return system


def test_nve_conserves_energy_for_a_harmonic_system_and_heats_up_under_a_rotational_force():
    n = 8
    start = RNG.normal(scale=0.1, size=(n, 3))
    harmonic = _particles(n)
    spring = openmm.CustomExternalForce("0.5*k*(x^2+y^2+z^2)")
    spring.addGlobalParameter("k", 1000.0)
    for i in range(n):
        spring.addParticle(i, [])
    harmonic.addForce(spring)
    calm = nve_drift(harmonic, start, timestep_fs=1.0, duration_ps=2.0, platform="Reference", seed=3)

    def swirl(state):
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        forces = -1000.0 * pos + 800.0 * np.stack([-pos[:, 1], pos[:, 0], np.zeros(len(pos))], axis=1)
        return 0.5 * 1000.0 * float((pos**2).sum()), forces

    rotational = _particles(n)
    rotational.addForce(openmm.PythonForce(swirl))
    hot = nve_drift(rotational, start, timestep_fs=1.0, duration_ps=2.0, platform="Reference", seed=3)

    assert calm.degrees_of_freedom == 3 * n and not calm.diverged
    assert abs(calm.drift_kj_per_mol_per_ps) < 1e-3 and calm.max_deviation_kj_per_mol < 0.05
    # same seeded start; OpenMM's leapfrog kinetic energy at t = 0 includes a half-step force term, hence not exact
    np.testing.assert_allclose(hot.temperature_k[0], calm.temperature_k[0], rtol=1e-2)
    # the swirl does work on the particles: their total "energy" rises far past the harmonic run's noise
    assert hot.drift_kj_per_mol_per_ps > 100 * max(abs(calm.drift_kj_per_mol_per_ps), 1e-3)
    assert hot.temperature_k[-1] > 3 * hot.temperature_k[0]


def test_nve_temperature_counts_the_momentum_a_translation_invariant_system_keeps():
    """Two particles joined by a spring, no CMMotionRemover: the momentum-free start stays so, 3 degrees of freedom
    (not 6) carry the kinetic energy, and the initial temperature averages to the requested one."""
    pair = _particles(2)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.15, 10.0)
    pair.addForce(bond)
    start = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]])
    runs = [
        nve_drift(pair, start, timestep_fs=0.5, duration_ps=0.0005, report_every=1, platform="Reference", seed=s)
        for s in range(300)
    ]
    assert {r.degrees_of_freedom for r in runs} == {3}
    # chi-squared with 3 degrees of freedom: the mean of 300 draws has a relative sd of 0.047
    assert np.mean([r.temperature_k[0] for r in runs]) == pytest.approx(300.0, rel=0.15)
    external = _particles(2)
    field = openmm.CustomExternalForce("10*x")
    for i in range(2):
        field.addParticle(i, [])
    external.addForce(field)
    assert nve_drift(external, start, duration_ps=0.0005, report_every=1, platform="Reference").degrees_of_freedom == 6


def test_a_float32_committee_is_recognised_as_keeping_zero_momentum():
    """The shipped committee (float32): its energy moves by rounding under a translation, its net force does not."""
    from advmd.diagnostics.conservative import _keeps_zero_momentum
    from advmd.openmm import create_system
    from advmd.systems import alanine_dipeptide, resource_path

    topology, positions = alanine_dipeptide()
    system = create_system(topology, str(resource_path("alanine-dipeptide-committee.pt")), remove_cm_motion=False)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    assert _keeps_zero_momentum(system, context)
    after = context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_array_equal(after, np.asarray(positions.value_in_unit(unit.nanometer)))  # put back


def test_nve_bad_settings_are_refused():
    with pytest.raises(ValueError, match="timestep_fs must be > 0"):
        nve_drift(_particles(1), np.zeros((1, 3)), timestep_fs=0.0)
    with pytest.raises(ValueError, match="report_every"):
        nve_drift(_particles(1), np.zeros((1, 3)), report_every=0)


def test_initial_velocities_are_seeded_thermal_and_carry_no_momentum():
    from advmd.diagnostics.conservative import _initial_velocities
    from advmd.units import AVOGADRO_PER_MOL, BOLTZMANN_EV_PER_K, ELEMENTARY_CHARGE_C

    system = _particles(4000, mass=2.0)
    v = _initial_velocities(system, 300.0, seed=5)
    np.testing.assert_allclose(v, _initial_velocities(system, 300.0, seed=5))
    assert np.abs(v.sum(0)).max() < 1e-12
    kinetic_joule = 0.5 * (2.0e-3 / AVOGADRO_PER_MOL) * ((v * 1e3) ** 2).sum()  # nm/ps -> m/s
    temperature = 2 * kinetic_joule / (3 * 4000 * BOLTZMANN_EV_PER_K * ELEMENTARY_CHARGE_C)
    assert temperature == pytest.approx(300.0, rel=0.03)
