"""Enhanced-sampling harness (issue 9): plain MD, uncertainty-biased MD and metadynamics on alanine dipeptide.

Alanine dipeptide in vacuum at 300 K (Langevin, 1/ps). Ground truth: amber14, cheap enough for a
long reference. Runs, each seeded:

* ``reference``: a long well-tempered metadynamics run on phi/psi with amber14; its free-energy
  surface is the reference (plain MD at 300 K needs tens of ns to cross to phi > 0);
* ``amber14-md``: plain amber14 MD;
* ``amber14-metad``: OpenMM's well-tempered metadynamics on phi/psi with amber14, same length;
* ``amber14+udd``: amber14 plus the shipped committee's UDD uncertainty bias alone
  (``bias_only=True``), reweighted by exp(+beta V_bias) to amber14's ensemble: uncertainty-driven
  exploration on the true potential, directly comparable with the reference;
* ``committee-md``: the shipped committee, no bias;
* ``committee+udd``: the committee with its UDD bias, reweighted to the committee's own ensemble
  (what a user of uncertainty-biased MD runs; its FES error includes the model's error).

Metrics per run: time to first visit of C7eq, C7ax and alpha_L; fraction of the 36x36 phi/psi
grid visited, and per ns; FES RMSE against the reference on bins below 20 kJ/mol (and the
fraction of those bins never reached); for runs with the committee, frames above the
committee's Eq. 8 threshold (what an active-learning loop would label) and the reweighting's
effective sample size.

A committee step costs about 7 ms on 2 CPU cores against about 0.1 ms for amber14, so runs with
the committee are shorter (``--committee-ps``); the report compares per simulated time too.

Writes ``<out>/results.json``, ``<out>/fes.png``, ``<out>/visits.png``.
Usage: python scripts/harness_enhanced_sampling.py [--reference-ns 2] [--ps 300] [--committee-ps 30]
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

import advmd  # noqa: F401  (torch before openmm-torch)
from advmd.attacks import peptide_dihedrals
from advmd.committee import read_metadata
from advmd.enhanced import ALANINE_BASINS, first_visit_times, free_energy_error, free_energy_surface, phi_psi, visited_fraction
from advmd.openmm import add_committee_force, create_system, read_uncertainty, use_simple_executor
from advmd.systems import alanine_dipeptide, amber14_vacuum_system, resource_path
from advmd.units import EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM

MODEL = str(resource_path("alanine-dipeptide-committee.pt"))
TEMPERATURE = 300.0
BINS = 36


def simulation_for(system, topology, positions, timestep_fs, seed, platform="CPU"):
    integrator = openmm.LangevinMiddleIntegrator(
        TEMPERATURE * unit.kelvin, 1.0 / unit.picosecond, timestep_fs * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(TEMPERATURE * unit.kelvin, seed)
    return simulation


def sample(simulation, topology, ps, timestep_fs, frame_ps, committee=False, step_hook=None):
    """Run and record phi/psi (and the committee's uncertainty and bias) every ``frame_ps``."""
    interval = max(1, int(round(frame_ps * 1000 / timestep_fs)))
    n_frames = int(round(ps / frame_ps))
    positions, times, bias, sigma_f = [], [], [], []
    start = time.time()
    for k in range(n_frames):
        if step_hook is not None:
            step_hook(simulation, interval)
        else:
            simulation.step(interval)
        state = simulation.context.getState(getPositions=True)
        positions.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * 10.0)
        times.append((k + 1) * frame_ps)
        if committee:
            u = read_uncertainty(simulation.context)
            bias.append(u.bias_energy)
            sigma_f.append(u.sigma_force)
    wall = time.time() - start
    out = {"cv": phi_psi(np.array(positions), topology), "times": np.array(times), "wall_s": wall, "ps": ps}
    if committee:
        out["bias_kjmol"] = np.array(bias)
        out["sigma_force"] = np.array(sigma_f)
    return out


def fmt(value):
    return "never" if value is None else f"{value:.1f}"


def metrics(run, reference_fes, threshold_sigma_f, equal_time_ps):
    visits = first_visit_times(run["cv"], run["times"])
    coverage = visited_fraction(run["cv"], BINS)
    early = run["times"] <= equal_time_ps + 1e-9
    result = {
        "equal_time": {
            "ps": equal_time_ps,
            "visited_fraction": visited_fraction(run["cv"][early], BINS),
            "first_visit_ps": first_visit_times(run["cv"][early], run["times"][early]),
        },
        "ps": run["ps"],
        "wall_s": run["wall_s"],
        "first_visit_ps": visits,
        "visited_fraction": coverage,
        "visited_fraction_per_ns": coverage / (run["ps"] / 1000.0),
    }
    fes = run.get("fes")
    if fes is None:
        surface = free_energy_surface(run["cv"], run.get("bias_kjmol"), TEMPERATURE, bins=BINS, min_bin_ess=3)
        fes = surface.free_energy
        result["reweighting"] = surface.summary()
    result["fes_error"] = free_energy_error(fes, reference_fes)
    if "sigma_force" in run and threshold_sigma_f is not None:
        result["frames_above_threshold"] = int(np.sum(run["sigma_force"] > threshold_sigma_f))
        result["frames"] = int(len(run["sigma_force"]))
    run["fes"] = fes
    return result


def metadynamics(topology, positions, ps, seed, frame_ps=0.2):
    system = amber14_vacuum_system(topology, constraints=app.HBonds)
    phi, psi = peptide_dihedrals(topology)
    variables = []
    for quad in (phi, psi):
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*quad)
        # 2 * BINS + 1 grid points: the periodic grid runs from -pi to +pi inclusive (both ends the same angle),
        # so its odd points are exactly the histogram's bin centres (see below).
        variables.append(app.BiasVariable(force, -math.pi, math.pi, 0.35, True, 2 * BINS + 1))
    meta = app.Metadynamics(
        system, variables, TEMPERATURE * unit.kelvin, biasFactor=8.0, height=1.5 * unit.kilojoule_per_mole, frequency=100
    )
    simulation = simulation_for(system, topology, positions, 2.0, seed)

    def hook(sim, steps):
        meta.step(sim, steps)

    run = sample(simulation, topology, ps, 2.0, frame_ps, step_hook=hook)
    free = np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)).T  # grid is [psi][phi] -> [phi][psi]
    free = free[1::2, 1::2]  # the grid's values at the centres of the BINS x BINS histogram bins
    assert free.shape == (BINS, BINS), free.shape
    # metadynamics defines F everywhere (zero bias where no hill was laid); keep only bins the run reached
    edges = np.linspace(-math.pi, math.pi, BINS + 1)
    counts, _, _ = np.histogram2d(run["cv"][:, 0], run["cv"][:, 1], bins=[edges, edges])
    free = np.where(counts > 0, free, np.nan)
    run["fes"] = free - np.nanmin(free)
    return run


def committee_run(topology, positions, ps, seed, strength, on_amber=False):
    """The committee (or amber14 with the committee's bias alone) at a UDD strength in kJ/mol."""
    use_simple_executor()
    if on_amber:
        system = amber14_vacuum_system(topology, constraints=app.HBonds)
        add_committee_force(topology, system, MODEL, bias_strength=strength, bias_only=True)
    else:
        system = create_system(topology, MODEL, bias_strength=strength)
    simulation = simulation_for(system, topology, positions, 1.0, seed)
    return sample(simulation, topology, ps, 1.0, 0.1, committee=True)


def plot(results, runs, reference_fes, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["reference"] + [n for n in runs if n != "reference"]
    columns = 3
    rows = (len(names) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.3 * rows), squeeze=False, constrained_layout=True)
    extent = [-180, 180, -180, 180]
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        fes = reference_fes if name == "reference" else runs[name]["fes"]
        image = ax.imshow(np.asarray(fes).T, origin="lower", extent=extent, vmin=0, vmax=40, cmap="viridis")
        cv = np.degrees(runs[name]["cv"])
        ax.plot(cv[:, 0], cv[:, 1], ",", color="white", alpha=0.3)
        for basin, (phi0, psi0) in ALANINE_BASINS.items():
            ax.text(phi0, psi0, basin, color="red", fontsize=7, ha="center")
        error = results[name]["fes_error"]["rmse_kjmol"] if name != "reference" else 0.0
        label = "n/a" if not np.isfinite(error) else f"{error:.1f} kJ/mol"
        ax.set_title(f"{name}\n{runs[name]['ps']:.0f} ps, FES RMSE {label}", fontsize=8)
        ax.set_xlabel("phi (deg)")
        ax.set_ylabel("psi (deg)")
    fig.colorbar(image, ax=axes.flat[: len(names)], shrink=0.8, label="F (kJ/mol)")
    fig.savefig(out / "fes.png", dpi=100)
    plt.close(fig)

    plot_visits(results, out)


def plot_visits(results, out):
    """Bars of the first visit per basin and run (from ``results`` alone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    comparison = [n for n in results if isinstance(results[n], dict) and "first_visit_ps" in results[n] and n != "reference"]
    width = 0.8 / len(ALANINE_BASINS)
    for j, basin in enumerate(ALANINE_BASINS):
        values = [results[n]["first_visit_ps"][basin] for n in comparison]
        heights = [v if v is not None else results[n]["ps"] for v, n in zip(values, comparison)]
        bars = ax.bar(np.arange(len(comparison)) + j * width, heights, width, label=basin)
        for bar, v in zip(bars, values):
            if v is None:
                bar.set_hatch("//")
                bar.set_alpha(0.4)
    ax.set_xticks(np.arange(len(comparison)) + width, comparison, rotation=20, fontsize=8)
    ax.set_ylabel("first visit (ps)")
    ax.set_title("time to first visit; hatched: never visited (bar = run length)", fontsize=9)
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "visits.png", dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-ns", type=float, default=2.0, help="length of the metadynamics reference")
    parser.add_argument("--ps", type=float, default=300.0, help="amber14 comparison runs (plain MD, metadynamics)")
    parser.add_argument("--committee-ps", type=float, default=30.0, help="runs that evaluate the committee")
    parser.add_argument("--udd-strength", type=float, default=20.0, help="UDD amplitude A (kJ/mol)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", default="docs/enhanced-sampling")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    topology, positions = alanine_dipeptide()
    start = time.time()
    runs = {}
    amber = amber14_vacuum_system(topology, constraints=app.HBonds)
    print("reference (metadynamics) ...", flush=True)
    runs["reference"] = metadynamics(topology, positions, args.reference_ns * 1000, args.seed, frame_ps=1.0)
    reference_fes = runs["reference"]["fes"]
    print("amber14 MD ...", flush=True)
    runs["amber14-md"] = sample(simulation_for(amber, topology, positions, 2.0, args.seed + 1), topology, args.ps, 2.0, 0.2)
    print("metadynamics ...", flush=True)
    runs["amber14-metad"] = metadynamics(topology, positions, args.ps, args.seed + 2)
    print("amber14 + committee UDD bias ...", flush=True)
    runs["amber14+udd"] = committee_run(topology, positions, args.committee_ps, args.seed + 3, args.udd_strength, on_amber=True)
    print("committee MD ...", flush=True)
    runs["committee-md"] = committee_run(topology, positions, args.committee_ps, args.seed + 3, 0.0)
    print("committee + UDD ...", flush=True)
    runs["committee+udd"] = committee_run(topology, positions, args.committee_ps, args.seed + 3, args.udd_strength)
    threshold = read_metadata(MODEL).get("uncertainty_threshold", {}).get("sigma_f2")
    threshold_sigma_f = math.sqrt(threshold) * EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM if threshold else None
    results = {"settings": vars(args), "threshold_sigma_force_kjmol_nm": threshold_sigma_f}
    for name in runs:
        results[name] = metrics(runs[name], reference_fes, threshold_sigma_f, args.committee_ps)
    results["wall_s"] = time.time() - start
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, runs, reference_fes, out)
    header = ["run", "ps", "wall s", "C7eq", "C7ax", "alpha_L", "grid visited", "per ns", "FES RMSE (kJ/mol)", "unreached"]
    print("| " + " | ".join(header + ["ESS", "frames > thr"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in runs:
        r = results[name]
        v = r["first_visit_ps"]
        ess = r.get("reweighting", {}).get("ess_fraction")
        print(
            f"| {name} | {r['ps']:.0f} | {r['wall_s']:.0f} | {fmt(v['C7eq'])} | {fmt(v['C7ax'])} | {fmt(v['alpha_L'])} | "
            f"{r['visited_fraction']:.3f} | {r['visited_fraction_per_ns']:.2f} | {r['fes_error']['rmse_kjmol']:.1f} | "
            f"{r['fes_error']['missing_fraction']:.2f} | {'' if ess is None else f'{ess:.2f}'} | "
            f"{r.get('frames_above_threshold', '')}{'/' + str(r['frames']) if 'frames' in r else ''} |"
        )
    print(f"\nequal time ({args.committee_ps:.0f} ps): grid visited, first visits C7eq / C7ax / alpha_L (ps)")
    for name in runs:
        e = results[name]["equal_time"]
        v = e["first_visit_ps"]
        print(f"| {name} | {e['visited_fraction']:.3f} | {fmt(v['C7eq'])} | {fmt(v['C7ax'])} | {fmt(v['alpha_L'])} |")
    print(f"wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
