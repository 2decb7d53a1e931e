"""Diagnostics report (issue 10): adversarial directions and conservative forces on alanine dipeptide.

Three comparisons, each with the product's own API (``advmd.diagnostics``):

1. the shipped committee approximating amber14 (what it was trained on), on amber14 MD
   frames at 300 K and 600 K;
2. amber14 approximating GFN2-xTB (a classical force field against a quantum method, as
   seed 000 compares BKS with DFT), on the same frames;
3. conservative forces: lambda and a 2 ps NVE run for the shipped committee, for amber14
   (lambda by finite differences), and for a deliberately non-conservative variant of the
   committee (its forces plus a small rotational term about the molecule's centre, a
   stand-in for a direct-force model).

Writes ``<out>/results.json`` and PNGs, and prints a markdown summary.
Usage: python scripts/report_diagnostics.py [--frames 100] [--out docs/diagnostics]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from ase import Atoms
from openmm import unit

import advmd  # noqa: F401  (torch before openmm-torch)
from advmd.committee import load_committee
from advmd.data import Dataset, Provenance
from advmd.data.initial import alanine_md_structures
from advmd.diagnostics import (
    committee_force_function,
    diagnose_adversarial,
    diagnose_conservative,
    force_jacobian,
    jacobian_asymmetry,
    labeler_asymmetry,
    nve_drift,
)
from advmd.labelers import make_labeler
from advmd.systems import alanine_dipeptide, resource_path
from advmd.units import ANGSTROM_TO_NM, EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, EV_TO_KJ_PER_MOL

MODEL = str(resource_path("alanine-dipeptide-committee.pt"))


def frames(n: int, seed: int):
    half = n // 2
    cold = alanine_md_structures(n_frames=half, interval_ps=1.0, temperature_k=300.0, seed=seed)
    hot = alanine_md_structures(n_frames=n - half, interval_ps=1.0, temperature_k=600.0, seed=seed + 1)
    return cold + hot


def labelled(path: Path, structures, labeler_name: str) -> Path:
    if path.exists():
        path.unlink()
    dataset = Dataset(path)
    dataset.add(structures, Provenance(source="initial"))
    dataset.label_pending(make_labeler(labeler_name), progress=False)
    return path


def swirl_system(topology, strength_fraction: float, reference_positions: np.ndarray):
    """The committee's mean forces plus omega z x (R - R_centre), scaled to a fraction of the RMS force."""
    potential, _ = load_committee(MODEL)
    numbers = torch.tensor([a.element.atomic_number for a in topology.atoms()])
    zero = torch.tensor(0.0)
    probe = potential(torch.tensor(reference_positions, dtype=torch.float32), numbers, None, zero)
    rms_force = float(probe["forces"].pow(2).mean().sqrt())  # eV/A
    spread = float(np.sqrt(((reference_positions - reference_positions.mean(0)) ** 2).sum(1).mean()))  # A
    omega = strength_fraction * rms_force / spread  # eV/A^2

    def compute(state):
        pos_a = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) / ANGSTROM_TO_NM
        out = potential(torch.tensor(pos_a, dtype=torch.float32), numbers, None, zero)
        centred = pos_a - pos_a.mean(0)
        swirl = omega * np.stack([-centred[:, 1], centred[:, 0], np.zeros(len(centred))], axis=1)
        forces = out["forces"].double().numpy() + swirl
        return float(out["energy"]) * EV_TO_KJ_PER_MOL, forces * EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM

    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(openmm.PythonForce(compute))
    return system, omega


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--nve-ps", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="docs/diagnostics")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"settings": vars(args)}
    start = time.time()
    structures = frames(args.frames, args.seed)
    scratch = tempfile.TemporaryDirectory(prefix="advmd-diagnostics-")
    work = Path(scratch.name)

    t = time.time()
    amber_db = labelled(work / "amber14.db", structures, "amber14")
    results["committee_vs_amber14"] = diagnose_adversarial(
        amber_db,
        MODEL,
        out / "committee-vs-amber14",
        reference="amber14",
        max_structures=None,
        relax_structures=20,
        seed=args.seed,
    )
    results["committee_vs_amber14"]["wall_s"] = time.time() - t

    t = time.time()
    xtb_db = labelled(work / "xtb.db", structures, "xtb")
    results["amber14_vs_xtb"] = diagnose_adversarial(
        xtb_db, "amber14", out / "amber14-vs-xtb", reference="xtb", max_structures=None, relax_structures=20, seed=args.seed
    )
    results["amber14_vs_xtb"]["wall_s"] = time.time() - t

    topology, positions = alanine_dipeptide()
    start_a = np.asarray(positions.value_in_unit(unit.nanometer)) / ANGSTROM_TO_NM
    start_atoms = Atoms(numbers=[a.element.atomic_number for a in topology.atoms()], positions=start_a)
    t = time.time()
    results["committee_conservative"] = diagnose_conservative(
        MODEL,
        structures[:: max(1, len(structures) // 10)],
        out / "committee-conservative",
        topology=topology,
        nve_ps=args.nve_ps,
        platform="CPU",
        seed=args.seed,
    )
    results["committee_conservative"]["wall_s"] = time.time() - t

    t = time.time()
    amber_lambda = labeler_asymmetry(make_labeler("amber14"), structures[:: max(1, len(structures) // 5)])
    from advmd.systems import amber14_vacuum_system

    amber_nve = nve_drift(
        amber14_vacuum_system(topology), positions, timestep_fs=0.5, duration_ps=args.nve_ps, platform="CPU", seed=args.seed
    )
    results["amber14_conservative"] = {"lambda": amber_lambda, "nve": amber_nve.summary(), "wall_s": time.time() - t}

    t = time.time()
    swirl_results = {}
    potential, _ = load_committee(MODEL)
    committee_forces = committee_force_function(potential, start_atoms.numbers)
    for fraction in (0.01, 0.05):
        system, omega = swirl_system(topology, fraction, start_a)

        def forces(pos, omega=omega):  # the same force field in torch, for an autograd Jacobian
            centred = pos - pos.mean(0)
            swirl = torch.stack([-centred[:, 1], centred[:, 0], torch.zeros_like(centred[:, 0])], dim=1)
            return committee_forces(pos).double() + omega * swirl

        lam = jacobian_asymmetry(force_jacobian(forces, start_a))
        nve = nve_drift(system, positions, timestep_fs=0.5, duration_ps=args.nve_ps, platform="Reference", seed=args.seed)
        swirl_results[str(fraction)] = {"omega_ev_per_a2": omega, "lambda": lam, "nve": nve.summary()}
        np.savez(
            out / f"swirl-{fraction}.npz", time_ps=nve.time_ps, total_energy=nve.total_energy, temperature_k=nve.temperature_k
        )
    results["nonconservative_variant"] = swirl_results
    results["nonconservative_variant"]["wall_s"] = time.time() - t
    results["wall_s"] = time.time() - start
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    plot_nve(out, results)

    for key in ("committee_vs_amber14", "amber14_vs_xtb"):
        adv, rel = results[key]["adversarial"], results[key]["relaxation"]
        print(
            f"| {key} | {adv['energy_rmse_ev']:.4f} | {adv['force_rmse_ev_per_angstrom']:.3f} | {adv['cosine_median']:.3f} "
            f"({adv['cosine_q25']:.3f}, {adv['cosine_q75']:.3f}) | {adv['fraction_cosine_above_half']:.2f} | "
            f"{rel['median_abs_energy_error_ev'][0]:.4f} -> {rel['median_abs_energy_error_ev'][-1]:.4f} |"
        )
    print(
        json.dumps(
            {k: v for k, v in results.items() if k.endswith("conservative") or k.startswith("noncons")}, indent=1, default=float
        )
    )
    print(f"wall time {results['wall_s']:.0f} s")


def plot_nve(out: Path, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    committee = np.load(out / "committee-conservative" / "conservative.npz")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(committee["time_ps"], committee["total_energy"] - committee["total_energy"][0], label="committee (lambda ~ 0)")
    axes[1].plot(committee["time_ps"], committee["temperature_k"], label="committee")
    for fraction in ("0.01", "0.05"):
        data = np.load(out / f"swirl-{fraction}.npz")
        lam = results["nonconservative_variant"][fraction]["lambda"]
        label = f"committee + {float(fraction):.0%} rotational force (lambda {lam:.2g})"
        axes[0].plot(data["time_ps"], data["total_energy"] - data["total_energy"][0], label=label)
        axes[1].plot(data["time_ps"], data["temperature_k"], label=label)
    axes[0].set_xlabel("time (ps)")
    axes[0].set_ylabel("E_total(t) - E_total(0) (kJ/mol)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("time (ps)")
    axes[1].set_ylabel("kinetic temperature (K)")
    fig.suptitle("NVE, alanine dipeptide, 0.5 fs: conservative vs non-conservative forces", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "nve-comparison.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
