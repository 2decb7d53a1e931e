"""Build the demo committee shipped in advmd/resources (reproducible from the seed).

Data: alanine dipeptide in vacuum, amber14 (unconstrained), Langevin MD at 300 K and
600 K (the hotter run widens coverage), one frame per 0.5 ps; labels from the same
amber14 System. Model: SchNet committee, M=5, 64 features, 3 interactions, 32 RBF,
cutoff 5 A, trained with paper Eq. 3 (alpha_E = alpha_F = 1) on bootstrap resamples.
Bias: UDD with width B chosen from the training-set energy spread.

The Eq. 8 uncertainty threshold (80th percentile of the training sigma_F^2) is stored in
the metadata as ``uncertainty_threshold``, as ``advmd train`` does. ``--recalibrate``
keeps the shipped weights and only recomputes the metadata (same frames, same seed).

Usage: python scripts/make_demo_committee.py [--frames 200] [--epochs 200] [--out PATH] [--recalibrate]
"""

import argparse
import json
import logging
import time

import numpy as np
import torch

from advmd.committee import CommitteePotential, SchNetCommittee, export_committee, load_trainable_committee, make_bias
from advmd.labelers import OpenMMLabeler
from advmd.md import langevin_frames
from advmd.systems import alanine_dipeptide, amber14_vacuum_system, resource_path
from advmd.train import StructureSet, TrainingConfig, calibrate_threshold, predict, train_committee


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200, help="frames per temperature (shipped: 200)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", default=None, help="default: advmd/resources/alanine-dipeptide-committee.pt")
    parser.add_argument("--recalibrate", action="store_true", help="keep the shipped weights; recompute the metadata")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(2)

    topology, positions = alanine_dipeptide()
    system = amber14_vacuum_system(topology)
    numbers = [a.element.atomic_number for a in topology.atoms()]
    t0 = time.perf_counter()
    frames = np.concatenate(
        [
            langevin_frames(system, positions, args.frames, 500, temperature_k=t, timestep_fs=1.0, seed=args.seed + k)
            for k, t in enumerate((300.0, 600.0))
        ]
    )
    energies, forces = OpenMMLabeler(system, topology, name="amber14").label_positions(frames)
    logging.info("sampled and labelled %d frames in %.1f s", len(frames), time.perf_counter() - t0)
    data = StructureSet.from_arrays(numbers, frames, energies, forces)

    shipped = resource_path("alanine-dipeptide-committee.pt")
    if args.recalibrate:
        committee, old = load_trainable_committee(shipped)
        training = old["demo"]["training"]
    else:
        committee = SchNetCommittee(
            sorted(set(numbers)), n_members=5, n_features=64, n_rbf=32, n_interactions=3, cutoff=5.0, seed=args.seed
        )
        config = TrainingConfig(epochs=args.epochs, batch_size=16, learning_rate=2e-3, seed=args.seed)
        result = train_committee(committee, data, config)
        training = {k: v for k, v in result.as_dict().items() if k != "history"}
        logging.info(
            "trained in %.0f s (%.0f structures/s): validation committee-mean RMSE E %.4f eV, F %.4f eV/A",
            result.seconds,
            result.structures_per_second,
            result.validation_mean_energy_rmse,
            result.validation_mean_force_rmse,
        )
    member_e, _ = predict(committee, data)
    sigma_e2 = np.var(member_e, axis=0, ddof=1)
    # UDD width: the bias reaches half its depth at the 99th percentile of the training energy spread.
    m, n = 5, len(numbers)
    s2 = (m - 1) * np.percentile(sigma_e2, 99)
    width = float(np.sqrt(s2 / (m * n * np.log(2.0))))
    potential = CommitteePotential(committee, make_bias("udd", m, width=width))
    out = args.out or str(shipped)
    threshold = calibrate_threshold(committee, data, 80.0)
    summary = {
        "training": training,
        "data": {
            "frames": len(frames),
            "temperatures_k": [300, 600],
            "labeler": "amber14-all.xml (OpenMM, no cutoff, unconstrained)",
            "seed": args.seed,
        },
        "sigma_e2_train_percentiles_ev2": {str(p): float(np.percentile(sigma_e2, p)) for p in (50, 90, 99)},
    }
    export_committee(potential, out, default_strength=0.0, extra_metadata={"demo": summary, "uncertainty_threshold": threshold})
    logging.info("wrote %s\n%s", out, json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
