"""Foundation benchmark (issue 2): ratios measured in one run, medians over repeats.

System: alanine dipeptide in vacuum (22 atoms), SchNet committee M=5 (64 features,
3 interactions, 32 RBF, cutoff 5 A, float32), OpenMM CPU platform, LangevinMiddle 0.5 fs.

Ratios printed:
  1. OpenMM step / raw call of the same frozen module (TorchForce and PythonForce paths; target <= 1.05)
  2. committee M=5 / one member, energy+forces   (target <= 2.0)
  3. HAL (sigma_F bias, double backward) step / mean-only step

Usage: python scripts/bench_foundation.py [--repeats 7] [--steps 200] [--threads N] [--platform CPU]
"""

import argparse
import statistics
import time

import numpy as np
import openmm
import torch
from openmm import app, unit

from advmd.committee import CommitteePotential, SchNetCommittee, make_bias
from advmd.openmm import create_system, parameter_names
from advmd.openmm.forces import _TorchForceModule
from advmd.systems import alanine_dipeptide


def timed(fn, repeats, inner):
    """Median over ``repeats`` of the mean time of ``inner`` calls (seconds)."""
    fn()
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def raw_energy_forces(committee, n_members, positions, numbers):
    """The minimal committee evaluation: member energies and forces by one backward pass."""
    member_positions = positions.unsqueeze(0).repeat(n_members, 1, 1).requires_grad_(True)
    energies = committee(member_positions, numbers, None)
    (gradient,) = torch.autograd.grad(energies.sum(), member_positions)
    return energies.detach(), -gradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--platform", default="CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    topology, positions = alanine_dipeptide()
    numbers = torch.tensor([a.element.atomic_number for a in topology.atoms()])
    pos = torch.tensor(np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0, dtype=torch.float32)
    hyper = dict(species=[1, 6, 7, 8], n_features=64, n_rbf=32, n_interactions=3, cutoff=5.0, seed=0)
    committee = SchNetCommittee(n_members=5, **hyper).eval()
    single = committee.select_members([0]).eval()
    # Frozen TorchScript, as openmm-torch runs a model (torch.jit.freeze folds constants and attributes).
    scripted_committee = torch.jit.freeze(torch.jit.script(committee))
    scripted_single = torch.jit.freeze(torch.jit.script(single))

    rows = []
    t_member = timed(lambda: raw_energy_forces(scripted_single, 1, pos, numbers), args.repeats, 50)
    t_committee = timed(lambda: raw_energy_forces(scripted_committee, 5, pos, numbers), args.repeats, 50)
    rows.append(("one member energy+forces (TorchScript)", t_member * 1e3, "ms", None))
    rows.append(("committee M=5 energy+forces (TorchScript)", t_committee * 1e3, "ms", None))
    rows.append(("ratio committee / one member", t_committee / t_member, "x", "<= 2.0"))

    # The raw call: the very module TorchForce runs (OpenMM units in and out, statistics included), frozen, called directly.
    boundary = _TorchForceModule(
        torch.jit.script(CommitteePotential(committee, make_bias("hal", 5))), numbers, None, numbers.shape[0], 0.1
    )
    boundary = torch.jit.freeze(torch.jit.script(boundary.eval()))
    pos_nm = torch.tensor(np.asarray(positions.value_in_unit(unit.nanometer)), dtype=torch.float64, requires_grad=True)
    globals_ = [torch.tensor(0.0, dtype=torch.float64) for _ in range(6)]
    t_raw = timed(lambda: boundary(pos_nm, *globals_), args.repeats, 50)
    rows.append(("raw call of the TorchForce module (frozen), mean only", t_raw * 1e3, "ms", None))

    def step_time(backend, strength_nm):
        system = create_system(topology, CommitteePotential(committee, make_bias("hal", 5)), backend=backend, bias_strength=0.0)
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtoseconds)
        integrator.setRandomNumberSeed(1)
        simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
        simulation.context.setPositions(positions)
        simulation.context.setParameter(parameter_names()["bias_strength"], strength_nm)
        simulation.step(10)
        return timed(lambda: simulation.step(args.steps), args.repeats, 1) / args.steps

    t_torch = step_time("torch", 0.0)
    t_python = step_time("python", 0.0)
    t_hal = step_time("torch", 0.01)
    rows.append(("OpenMM step, TorchForce, mean only", t_torch * 1e3, "ms", None))
    rows.append(("OpenMM step, PythonForce, mean only", t_python * 1e3, "ms", None))
    rows.append(("ratio TorchForce step / raw call", t_torch / t_raw, "x", "<= 1.05"))
    rows.append(("ratio PythonForce step / raw call", t_python / t_raw, "x", "<= 1.05"))
    rows.append(("OpenMM step, TorchForce, HAL sigma_F bias on", t_hal * 1e3, "ms", None))
    rows.append(("ratio sigma_F-bias step / mean-only step", t_hal / t_torch, "x", None))

    print(
        f"advmd foundation benchmark  torch {torch.__version__}  openmm {openmm.__version__}  "
        f"threads {torch.get_num_threads()}  platform {args.platform}  repeats {args.repeats} (medians)"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, unit_name, target in rows:
        print(f"  {name:<{width}}  {value:8.3f} {unit_name:<2}  {'target ' + target if target else ''}")


if __name__ == "__main__":
    main()
