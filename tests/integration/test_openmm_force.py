"""The committee force inside OpenMM equals a direct model call, in OpenMM units, on both paths."""

import math
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from advmd import units
from advmd.committee import CommitteePotential, SchNetCommittee, export_committee, make_bias
from advmd.errors import ModelFileError, TopologyMismatchError
from advmd.openmm import add_committee_force, create_system, parameter_names, read_uncertainty
from tests.conftest import BIAS_CASES, SPECIES, available_platforms, small_committee, small_potential
from tests.unit.committee.test_potential import water_box

PLATFORMS = available_platforms()
BACKENDS = ["torch", "python"]


def openmm_strength(form, strength_model_units):
    """Model-unit strength (eV, Angstrom) -> OpenMM units (kJ/mol, nm)."""
    if form == "udd":
        return strength_model_units * units.EV_TO_KJ_PER_MOL
    if form == "hal":
        return strength_model_units * units.ANGSTROM_TO_NM
    return strength_model_units


def make_context(system, positions, platform, box=None):
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context


def direct_call(potential, state, numbers, strength, box=None):
    positions = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10.0, dtype=torch.float64)
    cell = None if box is None else torch.tensor(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) * 10.0)
    return potential(positions, numbers, cell, torch.tensor(strength, dtype=torch.float64))


def check_against_direct(context, potential, numbers, strength, rtol, periodic=False):
    state = context.getState(energy=True, forces=True, positions=True)
    out = direct_call(potential, state, numbers, strength, box=True if periodic else None)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert energy == pytest.approx(float(out["energy"]) * units.EV_TO_KJ_PER_MOL, rel=rtol, abs=1e-6)
    expected = out["forces"].numpy() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM
    np.testing.assert_allclose(forces, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    return out


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form,params,strength", BIAS_CASES, ids=[c[0] for c in BIAS_CASES])
def test_force_equals_direct_model_call(alanine_pdb, alanine, platform, backend, form, params, strength):
    potential = small_potential(form, **params)
    system = create_system(alanine_pdb.topology, potential, backend=backend, bias_strength=openmm_strength(form, strength))
    context = make_context(system, alanine_pdb.positions, platform)
    rtol = 1e-9 if platform == "Reference" else 2e-6  # CPU/GPU platforms hold positions and forces in single precision
    out = check_against_direct(context, potential, alanine[1], strength, rtol)
    u = read_uncertainty(context)
    assert u.sigma_energy == pytest.approx(math.sqrt(float(out["sigma_e2"])) * units.EV_TO_KJ_PER_MOL, rel=1e-6)
    assert u.sigma_force == pytest.approx(math.sqrt(float(out["sigma_f2"])) * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rel=1e-6)
    assert u.max_force_deviation == pytest.approx(
        float(out["max_force_deviation"]) * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rel=1e-6
    )
    assert u.max_deviation_atom == int(out["max_deviation_atom"])
    assert u.bias_energy == pytest.approx(float(out["bias_energy"]) * units.EV_TO_KJ_PER_MOL, rel=1e-6, abs=1e-9)


def water_topology(numbers):
    """A water topology for ``numbers`` (O, H, H per molecule) in a triclinic 1 nm box; returns (topology, box)."""
    topology = app.Topology()
    chain = topology.addChain()
    for k in range(0, len(numbers), 3):
        residue = topology.addResidue("HOH", chain)
        for z, name in zip(numbers[k : k + 3].tolist(), ("O", "H1", "H2")):
            topology.addAtom(name, app.Element.getByAtomicNumber(z), residue)
    box = [openmm.Vec3(1.0, 0, 0), openmm.Vec3(0.2, 1.0, 0), openmm.Vec3(-0.15, 0.3, 1.0)] * unit.nanometer
    topology.setPeriodicBoxVectors(box)
    return topology, box


@pytest.mark.parametrize("backend", BACKENDS)
def test_periodic_box_force_equals_direct_model_call(backend):
    positions, numbers = water_box(n_molecules=24, side=10.0)
    topology, box = water_topology(numbers)
    potential = small_potential("udd", width=0.05)
    system = create_system(topology, potential, backend=backend, bias_strength=20.0)
    assert system.usesPeriodicBoundaryConditions()
    context = make_context(system, positions.numpy() * 0.1, "Reference")
    first = check_against_direct(context, potential, numbers, 20.0 * units.KJ_PER_MOL_TO_EV, 1e-9, periodic=True)
    # The box alone changes (a barostat's move): the force evaluates again, not its kept result.
    context.setPeriodicBoxVectors(*[v * 1.02 for v in box.value_in_unit(unit.nanometer)])
    second = check_against_direct(context, potential, numbers, 20.0 * units.KJ_PER_MOL_TO_EV, 1e-9, periodic=True)
    assert float(second["energy"]) != float(first["energy"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form,params", [("udd", {"width": 1.0}), ("hal", {})])
def test_set_parameter_changes_energy_and_forces_as_the_formula_says(alanine_pdb, alanine, backend, form, params):
    potential = small_potential(form, **params)
    system = create_system(alanine_pdb.topology, potential, backend=backend, bias_strength=0.0)
    context = make_context(system, alanine_pdb.positions, "Reference")
    name = parameter_names()["bias_strength"]
    results = {}
    for s in (0.0, 1.0, 2.0):
        context.setParameter(name, s)
        state = context.getState(energy=True, forces=True)
        results[s] = (
            state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
        )
    out = direct_call(potential, context.getState(positions=True), alanine[1], 0.0)
    mean_energy = float(out["mean_energy"]) * units.EV_TO_KJ_PER_MOL
    m, n = 4, alanine[1].shape[0]
    for s in (1.0, 2.0):
        if form == "udd":
            a_ev = s * units.KJ_PER_MOL_TO_EV
            bias = a_ev * (math.exp(-(m - 1) * float(out["sigma_e2"]) / (m * n * params["width"] ** 2)) - 1.0)
        else:
            tau_angstrom = s * units.NM_TO_ANGSTROM
            bias = -tau_angstrom * math.sqrt(float(out["sigma_f2"]) + 1e-12)
        assert results[s][0] == pytest.approx(mean_energy + bias * units.EV_TO_KJ_PER_MOL, rel=1e-10)
    # Both built-in forms are linear in their strength: forces are too.
    np.testing.assert_allclose(
        results[0.0][1], out["mean_forces"].numpy() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(results[2.0][1] - results[1.0][1], results[1.0][1] - results[0.0][1], rtol=1e-7, atol=1e-7)
    assert np.abs(results[1.0][1] - results[0.0][1]).max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_subset_of_atoms(alanine_pdb, alanine, backend):
    atoms = list(range(4, 16))
    potential = small_potential("none")
    system = create_system(alanine_pdb.topology, potential, backend=backend, atoms=atoms)
    context = make_context(system, alanine_pdb.positions, "Reference")
    state = context.getState(energy=True, forces=True, positions=True)
    positions = torch.tensor(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10.0)[atoms]
    out = potential(positions, alanine[1][atoms], None, torch.tensor(0.0, dtype=torch.float64))
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    others = [k for k in range(22) if k not in atoms]
    assert np.all(forces[others] == 0.0)
    np.testing.assert_allclose(forces[atoms], out["forces"].numpy() * units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rtol=1e-9)
    assert read_uncertainty(context).max_deviation_atom in atoms


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_with_any_integrator_and_changes_strength_mid_run(alanine_pdb, backend):
    potential = small_potential("udd", width=0.05)
    integrators = [
        openmm.LangevinMiddleIntegrator(300, 1.0, 0.0005),
        openmm.VerletIntegrator(0.0005),
        openmm.BrownianIntegrator(300, 1.0, 0.0001),
        openmm.NoseHooverIntegrator(300, 1.0, 0.0005),
    ]
    for integrator in integrators:
        system = create_system(alanine_pdb.topology, potential, backend=backend, bias_strength=1.0)
        simulation = app.Simulation(alanine_pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
        simulation.context.setPositions(alanine_pdb.positions)
        simulation.step(5)
        at_one = read_uncertainty(simulation).bias_energy
        simulation.context.setParameter(parameter_names()["bias_strength"], 3.0)
        assert read_uncertainty(simulation).bias_energy == pytest.approx(3.0 * at_one, rel=1e-9)  # UDD: linear in A
        simulation.step(5)
        state = simulation.context.getState(energy=True, positions=True)
        assert math.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        assert read_uncertainty(simulation).bias_energy < 0.0


def test_generic_committee_of_third_party_files_in_openmm(alanine_pdb, alanine, tmp_path):
    from advmd.committee import SingleMember, TorchScriptCommittee

    batched = small_committee(n_members=3, seed=4)
    paths = []
    for k in range(3):
        path = tmp_path / f"member{k}.pt"
        torch.jit.script(SingleMember(batched.select_members([k]))).save(str(path))
        paths.append(path)
    generic = CommitteePotential(TorchScriptCommittee(paths, species=SPECIES, cutoff=batched.cutoff), make_bias("hal", 3))
    exported = export_committee(generic, tmp_path / "generic.pt", default_strength=0.05)
    system = create_system(alanine_pdb.topology, exported)
    context = make_context(system, alanine_pdb.positions, "Reference")
    reference = CommitteePotential(batched, make_bias("hal", 3))
    check_against_direct(context, reference, alanine[1], 0.05, 1e-9)


def test_python_force_survives_xml_serialization(alanine_pdb):
    potential = small_potential("udd", width=0.05)
    system = create_system(alanine_pdb.topology, potential, backend="python", bias_strength=5.0)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    energies, readouts, contexts = [], [], []
    for s in (system, copy):
        context = make_context(s, alanine_pdb.positions, "Reference")
        contexts.append(context)
        state = context.getState(energy=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert energies[1] == pytest.approx(energies[0], rel=1e-12)
    # Original and copy share the force name; each readout comes from its own context's evaluation.
    positions = alanine_pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 1.01
    contexts[1].setPositions(positions)
    readouts = [read_uncertainty(c) for c in contexts]
    assert readouts[0].sigma_energy != readouts[1].sigma_energy
    contexts[0].setPositions(positions)
    assert read_uncertainty(contexts[0]) == readouts[1]


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_exported_file_is_a_valid_model_argument(alanine_pdb, tmp_path, backend):
    import gc

    potential = small_potential("udd", width=0.05)
    path = export_committee(potential, tmp_path / "c.pt", default_strength=0.1)
    system = create_system(alanine_pdb.topology, path, backend=backend)
    gc.collect()  # the loaded file's module must live as long as the force (the python path freezes it)
    context = make_context(system, alanine_pdb.positions, "Reference")
    assert context.getParameter(parameter_names()["bias_strength"]) == pytest.approx(0.1 * units.EV_TO_KJ_PER_MOL)
    positions = torch.tensor(alanine_pdb.getPositions(asNumpy=True)._value * 10.0, dtype=torch.float64)
    numbers = torch.tensor([a.element.atomic_number for a in alanine_pdb.topology.atoms()])
    expected = potential(positions, numbers, None, torch.tensor(0.1, dtype=torch.float64))["energy"]
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(expected) * units.EV_TO_KJ_PER_MOL, rel=1e-9)


def system_for(topology):
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    return system


def test_bad_input_gives_named_errors_and_leaves_the_system_untouched(alanine_pdb, tmp_path):
    topology = alanine_pdb.topology
    potential = small_potential("udd", width=0.05)
    system = system_for(topology)
    no_nitrogen = CommitteePotential(SchNetCommittee([1, 6, 8], n_members=2, n_features=8, n_rbf=4))
    with pytest.raises(TopologyMismatchError, match=r"atom 6 \(N in residue ALA\) is element N \(Z=7\).*knows Z=\[1, 6, 8\]"):
        add_committee_force(topology, system, no_nitrogen)
    small = openmm.System()
    small.addParticle(1.0)
    with pytest.raises(TopologyMismatchError, match="System has 1 particles but the topology has 22 atoms"):
        add_committee_force(topology, small, potential)
    with pytest.raises(ModelFileError, match="does not exist"):
        add_committee_force(topology, system, tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="corrupt"):
        add_committee_force(topology, system, corrupt)
    with pytest.raises(ValueError, match="bias_strength must be >= 0 for bias form 'udd', got -1.0"):
        add_committee_force(topology, system, potential, bias_strength=-1.0)
    with pytest.raises(ValueError, match="bias_strength must be finite"):
        add_committee_force(topology, system, potential, bias_strength=float("nan"))
    with pytest.raises(ValueError, match="bias_strength must be a number, got 'strong'"):
        add_committee_force(topology, system, potential, bias_strength="strong")
    with pytest.raises(ValueError, match="backend must be one of"):
        add_committee_force(topology, system, potential, backend="jax")
    with pytest.raises(TopologyMismatchError, match="outside the topology's 0..21"):
        add_committee_force(topology, system, potential, atoms=[0, 30])
    with pytest.raises(TypeError, match="model must be the path of an exported advmd committee"):
        add_committee_force(topology, system, 42)
    assert system.getNumForces() == 0
    add_committee_force(topology, system, potential)
    with pytest.raises(ValueError, match="already has global parameters.*another parameter_prefix"):
        add_committee_force(topology, system, potential)
    add_committee_force(topology, system, potential, parameter_prefix="second_")
    assert system.getNumForces() == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_positions_and_bad_runtime_strength_stop_the_evaluation(alanine_pdb, backend):
    positions = alanine_pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer).copy()
    positions[2, 0] = np.nan
    # Several forces, several contexts of one force (openmm-torch loads and freezes a copy of the module
    # per context): a crash while reporting the error shows on a later copy.
    for _ in range(2):
        system = create_system(alanine_pdb.topology, small_potential("udd", width=0.05), backend=backend)
        for _ in range(2):
            context = make_context(system, alanine_pdb.positions, "Reference")
            context.getState(energy=True)
            context.setPositions(positions)
            with pytest.raises(Exception, match="NaN or infinite"):
                context.getState(energy=True)
    context.setPositions(alanine_pdb.positions)
    context.setParameter(parameter_names()["bias_strength"], -2.0)
    with pytest.raises(Exception, match="strength must be >= 0"):
        context.getState(energy=True)


def test_torch_force_works_when_openmm_was_imported_before_torch(tmp_path):
    """OpenMM loads plugins at import; advmd must register the Torch kernels even if openmm came first."""
    import subprocess
    import sys

    model = export_committee(small_potential(), tmp_path / "c.pt")
    script = f"""
import openmm
from openmm import app
import advmd
from advmd.openmm import create_system
from advmd.systems import alanine_dipeptide
topology, positions = alanine_dipeptide()
system = create_system(topology, {str(model)!r}, backend="torch")
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
context.setPositions(positions)
print(context.getState(energy=True).getPotentialEnergy())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kJ/mol" in done.stdout


def _boundary_modules(potential, numbers, periodic):
    """Two scripted TorchForce modules of one potential: one to test, one fresh for reference values."""
    from advmd.openmm.forces import _PeriodicTorchForceModule, _TorchForceModule

    cls = _PeriodicTorchForceModule if periodic else _TorchForceModule
    return [torch.jit.script(cls(potential, numbers, None, int(numbers.shape[0]), 1.0).eval()) for _ in range(2)]


@pytest.mark.parametrize("periodic", [False, True], ids=["free", "periodic"])
def test_torch_force_module_reuses_its_last_evaluation_only_for_identical_inputs(periodic):
    """A repeated call (OpenMM's getState after a step) returns the last result; any changed input evaluates again."""
    positions, numbers = water_box(n_molecules=8, side=8.0)
    positions_nm = positions.to(torch.float64) * 0.1
    box = torch.tensor([[0.8, 0.0, 0.0], [0.1, 0.8, 0.0], [-0.05, 0.1, 0.8]], dtype=torch.float64)
    module, fresh = _boundary_modules(small_potential("hal"), numbers, periodic)
    probes = [torch.zeros((), dtype=torch.float64) for _ in range(5)]

    def call(m, pos, strength, cell=box):
        args = (pos, cell) if periodic else (pos,)
        energy, forces = m(*args, torch.tensor(strength, dtype=torch.float64), *probes)
        return energy, forces

    def same(got, expected):  # another module instance may run another TorchScript graph: last-digit rounding
        torch.testing.assert_close(got[0], expected[0], rtol=1e-12, atol=0.0)
        torch.testing.assert_close(got[1], expected[1], rtol=1e-12, atol=1e-12 * float(expected[1].abs().max()))

    first = call(module, positions_nm, 0.5)
    assert int(module.evaluations) == 1
    kept = [t.clone() for t in first]
    first[1].mul_(-2.0)  # the caller changes what it got: the kept copy must not change
    again = call(module, positions_nm.clone(), 0.5)
    assert int(module.evaluations) == 1
    assert torch.equal(again[0], kept[0]) and torch.equal(again[1], kept[1])
    same(again, call(fresh, positions_nm, 0.5))

    # One input changed at a time: positions by one ulp, then the strength alone, then the box alone.
    moved = positions_nm.clone()
    moved[3, 1] = torch.nextafter(moved[3, 1], torch.tensor(1.0, dtype=torch.float64))
    changes = [(moved, 0.5, box), (moved, 0.7, box)]
    if periodic:
        changes.append((moved, 0.7, box * 1.01))
    energies = [kept[0]]
    for k, (pos, strength, cell) in enumerate(changes, start=2):
        got = call(module, pos, strength, cell)
        assert int(module.evaluations) == k
        same(got, call(fresh, pos, strength, cell))
        energies.append(got[0])
    assert len({float(e) for e in energies[1:]}) == len(energies) - 1  # the strength and the box change the energy

    # The caller's buffer changed in place after a call (openmm-torch reuses its input tensor): evaluate again.
    buffer = moved.clone()
    call(module, buffer, 0.7, changes[-1][2])
    evaluations = int(module.evaluations)
    buffer[0, 0] += 1e-3
    got = call(module, buffer, 0.7, changes[-1][2])
    assert int(module.evaluations) == evaluations + 1
    same(got, call(fresh, buffer, 0.7, changes[-1][2]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_reporting_every_step_leaves_the_trajectory_bitwise_unchanged(alanine_pdb, backend):
    """Reading energy and statistics after every step (the force's kept result) changes nothing in the dynamics."""
    potential = small_potential("hal")
    finals = []
    for report in (False, True):
        system = create_system(alanine_pdb.topology, potential, backend=backend, bias_strength=0.02)
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
        integrator.setRandomNumberSeed(7)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(alanine_pdb.positions)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
        readings = []
        for step in range(6):
            integrator.step(1)
            if report:
                state = context.getState(energy=True, parameterDerivatives=(backend == "torch"))
                readings.append(
                    (state.getPotentialEnergy(), read_uncertainty(context, state=state if backend == "torch" else None))
                )
        final = context.getState(positions=True, energy=True, parameterDerivatives=(backend == "torch"))
        finals.append((final.getPositions(asNumpy=True)._value, final.getPotentialEnergy()._value))
        if backend == "python":  # one model evaluation per position set (x0..x6), reports or not
            from advmd.openmm.forces import _COMPUTATIONS

            (name,) = [f.getName() for f in system.getForces() if "committee#" in f.getName()]
            (computation,) = [c for c in list(_COMPUTATIONS) if c.name == name]
            assert computation.evaluations == 7
            assert computation.calls >= (13 if report else 7)  # OpenMM's own calls (its count is OpenMM's business)
        if report:
            # The last reading equals a direct evaluation at the final positions (a fresh context: nothing kept).
            check = make_context(
                create_system(alanine_pdb.topology, potential, backend=backend, bias_strength=0.02),
                final.getPositions(),
                "Reference",
            )
            expected = check.getState(energy=True).getPotentialEnergy()._value
            assert readings[-1][0]._value == pytest.approx(expected, rel=1e-12)
            assert readings[-1][1].sigma_force == pytest.approx(read_uncertainty(check).sigma_force, rel=1e-12)
    np.testing.assert_array_equal(finals[0][0], finals[1][0])
    assert finals[0][1] == finals[1][1]


class _BufferSpring(torch.nn.Module):
    """A float64 member whose only tensor is a buffer (no nn.Parameter): E = k * sum of squared pair distances."""

    def __init__(self, k: float):
        super().__init__()
        self.register_buffer("k", torch.tensor(k, dtype=torch.float64))

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, cell: Optional[torch.Tensor]) -> torch.Tensor:
        return self.k * ((positions[:, None] - positions[None]) ** 2).sum()


def test_a_float64_committee_without_parameters_gets_float64_positions(tmp_path):
    """The model dtype comes from buffers when there are no parameters: positions are not rounded to float32 on the
    way in (an energy error of 1e-6 relative), and the exported metadata says float64."""
    from advmd.committee import read_metadata
    from advmd.committee.members import TorchScriptCommittee

    members = [torch.jit.script(_BufferSpring(k)) for k in (1.0, 1.1)]
    potential = CommitteePotential(TorchScriptCommittee(members, [1], cutoff=5.0))
    topology = app.Topology()
    residue = topology.addResidue("H2", topology.addChain())
    for _ in range(2):
        topology.addAtom("H", app.Element.getBySymbol("H"), residue)
    x = 0.1234567891234  # nm: not representable in float32
    for backend in ("torch", "python"):
        system = create_system(topology, potential, backend=backend)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions([[0.0, 0.0, 0.0], [x, 0.0, 0.0]] * unit.nanometer)
        energy = context.getState(energy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        exact = 1.05 * 2 * (x * units.NM_TO_ANGSTROM) ** 2 * units.EV_TO_KJ_PER_MOL  # mean of k over 2 ordered pairs
        assert energy == pytest.approx(exact, rel=1e-13)
    assert read_metadata(export_committee(potential, tmp_path / "springs.pt"))["dtype"] == "float64"


@pytest.mark.slow
def test_compiled_python_force_equals_direct_model_call_and_stays_compiled_when_copied():
    """compile=True: a triclinic water box with a UDD bias gives the direct call's energy and forces; an XML copy
    (what a Simulation's checkpointing or a second Context may make) is compiled too and equal."""
    from advmd.openmm.forces import _COMPUTATIONS

    positions, numbers = water_box(n_molecules=24, side=10.0)
    topology, box = water_topology(numbers)
    potential = small_potential("udd", width=0.05)
    system = create_system(topology, potential, backend="python", bias_strength=20.0, compile=True)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    energies = []
    for s in (system, copy):
        context = make_context(s, positions.numpy() * 0.1, "Reference")
        out = check_against_direct(context, potential, numbers, 20.0 * units.KJ_PER_MOL_TO_EV, 1e-9, periodic=True)
        energies.append(float(out["energy"]))
        assert float(out["bias_energy"]) != 0.0
    assert energies[0] == energies[1]
    compiled = [c for c in _COMPUTATIONS if c.portable is not None and c.evaluations > 0]
    assert len(compiled) == 2  # the original and the copy both evaluated through torch.compile


def test_compile_needs_the_python_backend_and_a_schnet_committee(alanine_pdb):
    with pytest.raises(ValueError, match="compile=True needs backend='python'"):
        create_system(alanine_pdb.topology, small_potential(), backend="torch", compile=True)
    with pytest.raises(ValueError, match="compile must be True or False"):
        create_system(alanine_pdb.topology, small_potential(), backend="python", compile="yes")
