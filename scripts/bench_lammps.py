"""Steps per second of the same committee in LAMMPS (fix external: route 1; pair_style advmd: route 2) and OpenMM.

Alanine dipeptide, the shipped committee (M=5, float32), NVE/velocity Verlet at 0.5 fs, UDD
bias off and on. Medians over repeats. Usage: python scripts/bench_lammps.py [--steps 200] [--repeats 3]
"""

import argparse
import statistics
import time

import numpy as np
import openmm
import torch
from ase import Atoms
from openmm import unit

import advmd  # noqa: F401
from advmd.lammps import CommitteeFix, create_box, import_lammps
from advmd.lammps.plugin import build_plugin, load_plugin
from advmd.openmm import create_system, use_simple_executor
from advmd.systems import alanine_dipeptide, resource_path
from advmd.units import EV_TO_KJ_PER_MOL

MODEL = str(resource_path("alanine-dipeptide-committee.pt"))
THREADS = 1


def lammps_rate(steps: int, strength_ev: float, route: int) -> float:
    topology, positions = alanine_dipeptide()
    atoms = Atoms(
        numbers=[a.element.atomic_number for a in topology.atoms()],
        positions=np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0,
    )
    lmp = import_lammps().lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    torch.set_num_threads(THREADS)  # LAMMPS sets OpenMP (shared with libtorch) to 1 thread unless OMP_NUM_THREADS is set
    if route == 2:
        load_plugin(lmp)
    lmp.commands_string("units metal\natom_style atomic\natom_modify map array")
    create_box(lmp, atoms, ["H", "C", "N", "O"])
    if route == 1:
        lmp.commands_string("pair_style zero 6.0\npair_coeff * *")
        CommitteeFix(lmp, MODEL, ["H", "C", "N", "O"], bias_strength=strength_ev)
    else:
        lmp.commands_string(f"pair_style advmd {MODEL} strength {strength_ev}\npair_coeff * * H C N O")
    lmp.commands_string("velocity all create 300 1 dist gaussian\nfix nve all nve\ntimestep 0.0005\nthermo 0")
    lmp.command("run 20")
    start = time.perf_counter()
    lmp.command(f"run {steps}")
    rate = steps / (time.perf_counter() - start)
    lmp.close()
    return rate


def openmm_rate(steps: int, strength_kjmol: float) -> float:
    torch.set_num_threads(THREADS)
    topology, positions = alanine_dipeptide()
    system = create_system(topology, MODEL, bias_strength=strength_kjmol, remove_cm_motion=False)
    context = openmm.Context(system, openmm.VerletIntegrator(0.5 * unit.femtoseconds), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator = context.getIntegrator()
    integrator.step(20)
    start = time.perf_counter()
    integrator.step(steps)
    context.getState(energy=True)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    use_simple_executor()
    build_plugin()
    global THREADS
    THREADS = torch.get_num_threads()
    rows = []
    for label, strength_ev in (("mean only", 0.0), ("UDD bias 0.2 eV", 0.2)):
        route1 = statistics.median(lammps_rate(args.steps, strength_ev, 1) for _ in range(args.repeats))
        route2 = statistics.median(lammps_rate(args.steps, strength_ev, 2) for _ in range(args.repeats))
        omm = statistics.median(openmm_rate(args.steps, strength_ev * EV_TO_KJ_PER_MOL) for _ in range(args.repeats))
        rows.append((label, route1, route2, omm))
    print(
        f"advmd LAMMPS benchmark  torch {torch.__version__}  threads {THREADS}  alanine dipeptide, "
        f"shipped committee M=5 float32, {args.steps} steps x {args.repeats} repeats (medians)"
    )
    for label, route1, route2, omm in rows:
        print(f"  {label}")
        print(f"    LAMMPS fix external (route 1)      {route1:8.1f} steps/s   {route1 / omm:5.2f} x OpenMM")
        print(f"    LAMMPS pair_style advmd (route 2)  {route2:8.1f} steps/s   {route2 / omm:5.2f} x OpenMM")
        print(f"    OpenMM TorchForce (CPU platform)   {omm:8.1f} steps/s")


if __name__ == "__main__":
    main()
