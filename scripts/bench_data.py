"""Data benchmark (issue 3): labelling throughput per labeler, training throughput, in one run.

Labelling: structures per second for amber14 and GFN2-xTB (alanine dipeptide, 22 atoms),
BP86/def2-SVP (ammonia, PySCF) and the 2D double well.
Training: structures per second (forward + force loss + backward, all members together)
for alanine dipeptide, SchNet committee M=5 (64 features, 3 interactions, 32 RBF, cutoff 5 A).

Usage: python scripts/bench_data.py [--threads N]
"""

import argparse
import time

import numpy as np
import torch
from ase.build import molecule

from advmd.data.initial import alanine_md_structures, double_well_structures
from advmd.labelers import make_labeler
from advmd.train import StructureSet, TrainingConfig, train_committee


def rate(labeler, structures):
    start = time.perf_counter()
    result = labeler.label(structures)
    seconds = time.perf_counter() - start
    assert not result.failures, result.failures
    return len(structures) / seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    alanine = alanine_md_structures(n_frames=64, interval_ps=0.5, seed=0)
    rows = []
    amber_rate, amber = rate(make_labeler("amber14"), alanine)
    rows.append(("amber14 (OpenMM Reference), alanine dipeptide", amber_rate))
    xtb_rate, _ = rate(make_labeler("xtb"), alanine[:8])
    rows.append(("GFN2-xTB (tblite), alanine dipeptide", xtb_rate))
    ammonia = molecule("NH3")
    dft_rate, _ = rate(make_labeler("dft"), [ammonia.copy() for _ in range(3)])
    rows.append(("BP86/def2-SVP (PySCF), ammonia", dft_rate))
    dw_rate, _ = rate(make_labeler("double-well-2d"), double_well_structures(4000, seed=0))
    rows.append(("2D double well (Eq. 15)", dw_rate))

    numbers = alanine[0].numbers
    data = StructureSet.from_arrays(numbers, np.array([a.positions for a in alanine]), amber.energies, np.array(amber.forces))
    from advmd.committee import SchNetCommittee

    committee = SchNetCommittee(sorted(set(numbers)), n_members=5, n_features=64, n_rbf=32, n_interactions=3, cutoff=5.0, seed=0)
    result = train_committee(committee, data, TrainingConfig(epochs=3, batch_size=16, seed=0, early_stopping_patience=10))
    single = SchNetCommittee(sorted(set(numbers)), n_members=1, n_features=64, n_rbf=32, n_interactions=3, cutoff=5.0, seed=0)
    single_result = train_committee(single, data, TrainingConfig(epochs=3, batch_size=16, seed=0, early_stopping_patience=10))

    print(f"advmd data benchmark  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print("  labelling throughput (structures/s)")
    for name, value in rows:
        print(f"    {name:<50} {value:10.2f}")
    print("  training throughput, alanine dipeptide, batch 16 (structures/s, all members per structure)")
    print(f"    {'committee M=5':<50} {result.structures_per_second:10.2f}")
    print(f"    {'one member M=1':<50} {single_result.structures_per_second:10.2f}")
    print(f"    {'ratio M=5 time / M=1 time':<50} {single_result.structures_per_second / result.structures_per_second:10.2f}")


if __name__ == "__main__":
    main()
