"""Attack benchmark (issue 5): S dihedral (phi/psi) attacks batched in one computation vs one seed at a time.

Alanine dipeptide, the shipped committee (M=5, 64 features, 3 interactions, float32), Eq. 10
objective (sigma_F^2 with its exact gradient: a double backward), Adam lr 5e-3, delta ~
N(0, 0.01 rad): the paper's settings. Wall time of ``--steps`` Adam steps for all S seeds,
batched and looped; the time per step is constant (fixed shapes), so the 1000-step figure is
``steps_per_1000 = 1000 / steps`` times the measurement unless ``--steps 1000`` is given.
Also prints the batched time per seed and step at several batch sizes, which shows where the
CPU stops gaining from batching.

Usage: python scripts/bench_attacks.py [--seeds 50] [--steps 30] [--repeats 3]
"""

import argparse
import statistics
import time

import numpy as np
import torch

from advmd.attacks import AttackConfig, DihedralRotation, attack, peptide_dihedrals
from advmd.committee import load_trainable_committee
from advmd.systems import alanine_dipeptide, resource_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    topology, positions = alanine_dipeptide()
    numbers = [a.element.atomic_number for a in topology.atoms()]
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    committee, _ = load_trainable_committee(resource_path("alanine-dipeptide-committee.pt"))
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology))
    rng = np.random.default_rng(0)
    base = np.asarray(positions._value) * 10.0
    seeds = base[None] + rng.normal(scale=0.02, size=(args.seeds, 22, 3))
    config = AttackConfig(steps=args.steps, learning_rate=5e-3, init_std=0.01, seed=0)

    def batched(s=args.seeds):
        attack(committee, numbers, seeds[:s], rotation, config)

    def looped():
        for k in range(args.seeds):
            attack(committee, numbers, seeds[k : k + 1], rotation, config)

    batched(4)  # warm-up
    times = {"batched": [], "looped": []}
    for _ in range(args.repeats):
        for name, fn in (("batched", batched), ("looped", looped)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    tb, tl = statistics.median(times["batched"]), statistics.median(times["looped"])
    scale = 1000.0 / args.steps
    print(
        f"advmd attack benchmark  torch {torch.__version__}  threads {torch.get_num_threads()}  "
        f"{args.seeds} phi/psi attacks x {args.steps} steps, M=5, repeats {args.repeats} (medians)"
    )
    print(f"  batched (one computation)          {tb:8.2f} s   ({tb * scale / 60:6.1f} min per 1000 steps)")
    print(f"  looped (one seed at a time)        {tl:8.2f} s   ({tl * scale / 60:6.1f} min per 1000 steps)")
    print(f"  ratio looped / batched             {tl / tb:8.2f} x   target >= 10")
    print("  batched time per seed and step:")
    for s in (1, 5, 10, 25, args.seeds):
        if s > args.seeds:
            continue
        start = time.perf_counter()
        batched(s)
        per = (time.perf_counter() - start) / (s * args.steps)
        print(f"    S = {s:3d}   {per * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
