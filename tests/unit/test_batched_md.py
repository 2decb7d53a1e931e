"""Batched Langevin replicas: velocity Verlet at zero friction, Boltzmann statistics, checks per replica."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from advmd.md.batched import run_replicas
from advmd.md.stability import DistanceRangeChecker, FiniteChecker

K_SPRING = 20.0  # eV/A^2
R0 = 1.1  # A


def triatomic_energy(x: torch.Tensor) -> torch.Tensor:
    """Two harmonic bonds 0-1 and 1-2 plus a weak 0-2 spring (eV), for positions (S, 3, 3) in Angstrom."""
    d01 = torch.linalg.norm(x[:, 1] - x[:, 0], dim=-1)
    d12 = torch.linalg.norm(x[:, 2] - x[:, 1], dim=-1)
    d02 = torch.linalg.norm(x[:, 2] - x[:, 0], dim=-1)
    return 0.5 * K_SPRING * ((d01 - R0) ** 2 + (d12 - R0) ** 2) + 0.5 * (d02 - 1.8) ** 2


class TorchCalculator(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = torch.tensor(self.atoms.positions[None], dtype=torch.float64, requires_grad=True)
        energy = triatomic_energy(x)
        (gradient,) = torch.autograd.grad(energy.sum(), x)
        self.results = {"energy": float(energy[0].detach()), "forces": -gradient[0].numpy()}


START = np.array([[0.0, 0.0, 0.0], [1.15, 0.1, 0.0], [1.7, 1.0, 0.05]])
MASSES = [15.999, 1.008, 12.011]


def test_zero_friction_is_velocity_verlet_as_in_ase():
    from ase.md.verlet import VelocityVerlet

    velocities = np.array([[0.001, -0.002, 0.0], [0.01, 0.003, -0.004], [-0.002, 0.0, 0.001]])  # A/fs
    result = run_replicas(
        triatomic_energy, MASSES, START, [300.0], steps=200, timestep_fs=0.5, friction_per_ps=0.0, velocities=velocities[None]
    )
    atoms = Atoms("OHC", positions=START, masses=MASSES)
    atoms.calc = TorchCalculator()
    atoms.set_velocities(velocities / units.fs)  # A/fs -> ASE velocity units (1 fs = units.fs time units)
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(200)
    np.testing.assert_allclose(result.positions[0], atoms.positions, atol=1e-10)
    np.testing.assert_allclose(result.velocities[0], atoms.get_velocities() * units.fs, atol=1e-12)


def total_energy(positions, velocities):
    """Potential plus kinetic energy (eV) of replicas; velocities in Angstrom/fs."""
    kinetic = 0.5 * (np.asarray(MASSES)[None, :, None] * (velocities / units.fs) ** 2).sum((1, 2))
    return triatomic_energy(torch.tensor(positions)).numpy() + kinetic


def test_zero_friction_conserves_energy():
    start = run_replicas(triatomic_energy, MASSES, START, [600.0] * 3, steps=0, seed=3)
    later = run_replicas(
        triatomic_energy,
        MASSES,
        START,
        [600.0] * 3,
        steps=2000,
        timestep_fs=0.25,
        friction_per_ps=0.0,
        velocities=start.velocities,
    )
    e0 = total_energy(start.positions, start.velocities)
    assert np.all(np.abs(e0 - triatomic_energy(torch.tensor(START[None])).numpy()) > 0.05)  # the replicas move
    np.testing.assert_allclose(total_energy(later.positions, later.velocities), e0, atol=2e-4)


def test_initial_velocities_have_the_temperature_and_no_net_momentum():
    temperatures = [300.0, 600.0, 900.0]
    result = run_replicas(triatomic_energy, MASSES, START, temperatures, steps=0, seed=5)
    m = np.asarray(MASSES)[None, :, None]
    momentum = (m * result.velocities).sum(1)
    np.testing.assert_allclose(momentum, 0.0, atol=1e-12)
    kinetic = 0.5 * (m * (result.velocities / units.fs) ** 2).sum((1, 2))  # eV
    np.testing.assert_allclose(kinetic, 0.5 * (3 * 3 - 3) * units.kB * np.asarray(temperatures), rtol=1e-10)


def test_velocities_are_angstrom_per_femtosecond_in_si_units():
    """Independent of ASE's unit system: the kinetic temperature of the returned velocities, in SI, is the target
    (a hydrogen at 300 K moves at about 0.025 A/fs, 2.5 km/s)."""
    from advmd.units import AVOGADRO_PER_MOL, BOLTZMANN_EV_PER_K, ELEMENTARY_CHARGE_C

    result = run_replicas(triatomic_energy, MASSES, START, [300.0] * 400, steps=0, seed=2)
    mass_kg = np.asarray(MASSES)[None, :, None] * 1e-3 / AVOGADRO_PER_MOL
    kinetic_joule = 0.5 * (mass_kg * (result.velocities * 1e5) ** 2).sum((1, 2))  # 1 A/fs = 1e5 m/s
    temperature = 2.0 * kinetic_joule / ((3 * 3 - 3) * BOLTZMANN_EV_PER_K * ELEMENTARY_CHARGE_C)
    np.testing.assert_allclose(temperature, 300.0, rtol=1e-6)  # ASE uses CODATA 2014 constants, advmd 2018


def test_replicas_have_their_own_checkers():
    """A temperature window per replica: a hot replica fails, a cold one beside it does not."""
    from advmd.md.stability import TemperatureChecker

    result = run_replicas(
        triatomic_energy,
        MASSES,
        START,
        [100.0, 5000.0],
        steps=40,
        friction_per_ps=0.0,
        seed=3,
        checkers=[TemperatureChecker(target=200.0, factor=3.0, window=2)],
        check_interval=10,
    )
    assert result.stable == [True, False] and "temperature" in result.reasons[1]


def test_langevin_samples_the_boltzmann_distribution_of_a_harmonic_well():
    k = 2.0  # eV/A^2, one atom per replica in an isotropic well

    def well(x):
        return 0.5 * k * (x**2).sum((1, 2))

    temperature = 500.0
    s = 2000
    result = run_replicas(
        well, [4.0], np.zeros((1, 3)), [temperature] * s, steps=800, timestep_fs=1.0, friction_per_ps=20.0, seed=11
    )
    kt = units.kB * temperature
    x2 = np.mean(result.positions**2)
    v2 = np.mean((result.velocities / units.fs) ** 2)
    # 6000 samples of a Gaussian: the variance estimate has a relative error of about sqrt(2/6000) = 1.8%
    assert x2 == pytest.approx(kt / k, rel=0.05)
    assert v2 == pytest.approx(kt / 4.0, rel=0.05)


def test_each_replica_stops_at_its_first_failed_check_and_is_frozen():
    checker = DistanceRangeChecker([(0, 2)], 1.2, 2.2, label="O-C")
    temperatures = [10.0, 10.0, 20000.0, 20000.0]
    kwargs = dict(steps=400, timestep_fs=0.5, friction_per_ps=1.0, checkers=[FiniteChecker(), checker], check_interval=10, seed=2)
    result = run_replicas(triatomic_energy, MASSES, START, temperatures, **kwargs)
    assert result.stable[:2] == [True, True] and result.failure_step[:2] == [-1, -1]
    assert result.stable[2:] == [False, False]
    for k in (2, 3):
        assert 0 < result.failure_step[k] <= 400 and result.failure_step[k] % 10 == 0
        assert "O-C" in result.reasons[k]
        d = np.linalg.norm(result.positions[k, 2] - result.positions[k, 0])
        assert not 1.2 <= d <= 2.2  # frozen at the failing frame
    again = run_replicas(triatomic_energy, MASSES, START, temperatures, **kwargs)
    assert again.failure_step == result.failure_step
    np.testing.assert_array_equal(again.positions, result.positions)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="positions_angstrom must have shape"):
        run_replicas(triatomic_energy, MASSES, np.zeros((2, 3)), [300.0], steps=1)
    with pytest.raises(ValueError, match="temperatures_k"):
        run_replicas(triatomic_energy, MASSES, START, [-1.0], steps=1)
    with pytest.raises(ValueError, match="steps must be"):
        run_replicas(triatomic_energy, MASSES, START, [300.0], steps=1.5)
    with pytest.raises(ValueError, match="friction_per_ps"):
        run_replicas(triatomic_energy, MASSES, START, [300.0], steps=1, friction_per_ps=-1.0)
    assert math.isfinite(run_replicas(triatomic_energy, MASSES, START, [0.0], steps=2).positions.sum())
