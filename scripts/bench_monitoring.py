"""Monitoring overhead (issue 4): step time with all reporters at interval 100 / without.

Alanine dipeptide with the shipped committee (M=5) on the OpenMM CPU platform, TorchForce,
LangevinMiddle 0.5 fs. Reporters: UncertaintyReporter (CSV), StabilityWatchdog (bonds,
minimum distance, finite, temperature, uncertainty limit) and FrameExtractor (trust band,
HDF5 trajectory, dataset rows). Target: ratio <= 1.05. Medians over repeats, interleaved.

Usage: python scripts/bench_monitoring.py [--steps 1000] [--repeats 5]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import openmm
import torch
from openmm import app, unit

from advmd import units
from advmd.data import Dataset
from advmd.md.stability import BondLengthChecker, MinimumDistanceChecker, TemperatureChecker, UncertaintyChecker, make_checker
from advmd.openmm import create_system
from advmd.openmm.reporters import FrameExtractor, StabilityWatchdog, UncertaintyReporter
from advmd.systems import alanine_dipeptide, resource_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--interval", type=int, default=100)
    args = parser.parse_args()
    topology, positions = alanine_dipeptide()
    model = str(resource_path("alanine-dipeptide-committee.pt"))
    reference = positions.value_in_unit(unit.nanometer)
    import numpy as np

    reference = np.asarray(reference) * units.NM_TO_ANGSTROM

    def simulation(with_reporters: bool, workdir: Path):
        system = create_system(topology, model, backend="torch")
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtoseconds)
        integrator.setRandomNumberSeed(1)
        sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
        sim.context.setPositions(positions)
        sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
        if with_reporters:
            checkers = [
                BondLengthChecker.from_topology(topology, reference),
                MinimumDistanceChecker.from_topology(topology, 0.7),
                make_checker("finite"),
                TemperatureChecker(300.0, 3.0, 5),
                UncertaintyChecker(50.0),
            ]
            sim.reporters += [
                UncertaintyReporter(workdir / "u.csv", args.interval),
                StabilityWatchdog(checkers, args.interval),
                FrameExtractor(Dataset(workdir / "frames.db"), args.interval, 0.0, 100.0, trajectory=workdir / "frames.h5"),
            ]
        sim.step(20)
        return sim, sim.context.getState(positions=True, velocities=True)

    with tempfile.TemporaryDirectory() as tmp:
        (plain, plain_start), (monitored, monitored_start) = simulation(False, Path(tmp)), simulation(True, Path(tmp))
        t_plain, t_monitored = [], []
        for _ in range(args.repeats):
            for sim, start_state, store in ((plain, plain_start, t_plain), (monitored, monitored_start, t_monitored)):
                # Every repeat times the same steps from the same state: the demo committee (generation 0)
                # is not stable for thousands of steps, and the watchdog would stop the run.
                sim.context.setPositions(start_state.getPositions())
                sim.context.setVelocities(start_state.getVelocities())
                start = time.perf_counter()
                sim.step(args.steps)
                store.append((time.perf_counter() - start) / args.steps)
    a, b = statistics.median(t_plain), statistics.median(t_monitored)
    print(f"advmd monitoring benchmark  torch {torch.__version__}  threads {torch.get_num_threads()}  interval {args.interval}")
    print(f"  step without reporters        {a * 1e3:8.3f} ms")
    print(f"  step with all reporters       {b * 1e3:8.3f} ms")
    print(f"  ratio monitored / plain       {b / a:8.3f} x   target <= 1.05")


if __name__ == "__main__":
    main()
