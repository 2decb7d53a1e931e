"""Per-generation metrics and plots of the active-learning loop.

* RMSE of the committee mean against the labeler on a fixed held-out set (labelled once,
  at the start) and, for alanine dipeptide, on a fixed phi/psi grid (grid points within
  the selection's energy cap above the grid minimum, so steric clashes of rigid rotations
  do not dominate).
* Coverage of the CV space: the fraction of CV bins holding a labelled structure
  (alanine: phi/psi, ``grid`` x ``grid`` bins over the circle; double well: (x, y) bins of
  the box whose centre lies below 5 eV). Ammonia has no CV map: ``None``.
* Labels spent (all, and new this generation), the median and max sigma_F^2 of the
  candidates and of the selected structures, the mean reference energy of the new rows
  (the paper's "sampled energy"), and the stable fraction of MD walkers when MD sources ran.
* ``map.png``: committee energy and sigma_F^2 over the CVs with the labelled points
  (like the paper's Fig. 2a and 4c); ``learning-curves.png`` for the run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from advmd._io import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["make_holdout", "generation_metrics", "plot_learning_curves", "alanine_grid", "collective_variables"]

DOUBLE_WELL_BOX = 1.5
DOUBLE_WELL_MAP_EMAX = 5.0


def _label(structures, labeler_cfg) -> tuple:
    """(energies, forces, indices of the structures labelled): structures the labeler fails on (an SCF that does not
    converge on a steric clash of the CV grid) are dropped from the evaluation set, not fatal to the run."""
    from advmd.labelers import make_labeler

    labeler = make_labeler(labeler_cfg["name"], **dict(labeler_cfg["options"]))
    result = labeler.label(structures)
    ok = np.array(result.succeeded, dtype=np.int64)
    if len(ok) == 0:
        raise RuntimeError(f"the labeler failed on every held-out structure: {dict(list(result.failures.items())[:3])}")
    if result.failures:
        logger.warning(
            "held-out set: %d of %d structures failed to label and are left out", len(result.failures), len(structures)
        )
    energies = np.asarray(result.energies, dtype=float)[ok]
    forces = np.asarray([result.forces[k] for k in ok], dtype=float)
    return energies, forces, ok


def alanine_grid(n: int):
    """Alanine dipeptide rotated to an ``n`` x ``n`` phi/psi lattice: positions (n*n, 22, 3) Angstrom, angles (n*n, 2) rad."""
    import torch

    from advmd.attacks import DihedralRotation, dihedral_angles, peptide_dihedrals
    from advmd.systems import alanine_dipeptide

    topology, positions = alanine_dipeptide()
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    quadruples = peptide_dihedrals(topology)
    rotation = DihedralRotation(22, bonds, quadruples)
    base = torch.tensor(np.asarray(positions._value) * 10.0, dtype=torch.float64)
    current = dihedral_angles(base[None], torch.tensor(quadruples))[0]
    axis = -math.pi + (np.arange(n) + 0.5) * 2 * math.pi / n
    phi, psi = np.meshgrid(axis, axis, indexing="ij")
    targets = torch.tensor(np.stack([phi.ravel(), psi.ravel()], axis=1))
    moved = rotation.apply(base[None].repeat(n * n, 1, 1), targets - current)
    return moved.numpy(), targets.numpy()


def collective_variables(system: str, positions: np.ndarray) -> Optional[np.ndarray]:
    """CV coordinates of structures (S, 2): phi/psi (rad) for alanine, (x, y) for the double well; else None."""
    if len(positions) == 0:
        return np.zeros((0, 2))
    if system == "double-well":
        return np.asarray(positions)[:, 0, :2]
    if system == "alanine":
        import torch

        from advmd.attacks import dihedral_angles, peptide_dihedrals
        from advmd.systems import alanine_dipeptide

        topology, _ = alanine_dipeptide()
        return dihedral_angles(torch.tensor(np.asarray(positions)), torch.tensor(peptide_dihedrals(topology))).numpy()
    return None


def make_holdout(system: str, system_cfg: Dict[str, Any], labeler_cfg: Dict[str, Any], seed: int) -> Dict[str, np.ndarray]:
    """The fixed evaluation set of a run, labelled once (arrays for ``holdout.npz``)."""
    from advmd.data.initial import initial_structures
    from advmd.labelers.analytic import double_well_2d

    out: Dict[str, np.ndarray] = {}
    if system == "double-well":
        axis = np.linspace(-DOUBLE_WELL_BOX, DOUBLE_WELL_BOX, 31)
        xy = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2)
        energy, _ = double_well_2d(xy)
        xy = xy[energy < DOUBLE_WELL_MAP_EMAX]
        positions = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)[:, None, :]
        numbers = np.array([1])
    else:
        options = {"interval_ps": system_cfg["interval_ps"]} if system == "alanine" else {}
        if system == "ammonia":
            options["labeler"] = labeler_cfg["name"]
            options["labeler_options"] = dict(labeler_cfg["options"])
        structures, _ = initial_structures(system, int(system_cfg["holdout"]), seed + 1000, **options)
        positions = np.array([a.positions for a in structures])
        numbers = structures[0].numbers
    from ase import Atoms

    energies, forces, ok = _label([Atoms(numbers=numbers, positions=p) for p in positions], labeler_cfg)
    out.update(numbers=np.asarray(numbers), positions=positions[ok], energies=energies, forces=forces)
    if system == "alanine":
        grid_positions, angles = alanine_grid(int(system_cfg["grid"]))
        grid_e, grid_f, ok = _label([Atoms(numbers=numbers, positions=p) for p in grid_positions], labeler_cfg)
        out.update(grid_positions=grid_positions[ok], grid_cv=angles[ok], grid_energies=grid_e, grid_forces=grid_f)
    return out


def _structure_set(numbers, positions, energies, forces):
    from advmd.train import StructureSet

    return StructureSet.from_arrays(numbers, positions, energies, forces)


def _coverage(system: str, cv: Optional[np.ndarray], n_bins: int) -> Optional[float]:
    if cv is None:
        return None
    if system == "alanine":
        edges = np.linspace(-math.pi, math.pi, n_bins + 1)
        counts, _, _ = np.histogram2d(cv[:, 0], cv[:, 1], bins=[edges, edges])
        return float(np.mean(counts > 0))
    from advmd.labelers.analytic import double_well_2d

    edges = np.linspace(-DOUBLE_WELL_BOX, DOUBLE_WELL_BOX, n_bins + 1)
    counts, _, _ = np.histogram2d(cv[:, 0], cv[:, 1], bins=[edges, edges])
    centres = 0.5 * (edges[1:] + edges[:-1])
    cx, cy = np.meshgrid(centres, centres, indexing="ij")
    energy, _ = double_well_2d(np.stack([cx.ravel(), cy.ravel()], axis=1))
    accessible = energy.reshape(cx.shape) < DOUBLE_WELL_MAP_EMAX
    return float(np.mean(counts[accessible] > 0))


def generation_metrics(
    runner, g: int, model_path: Path, candidates: List[Dict[str, Any]], selection: Optional[Dict[str, Any]]
) -> Dict[str, Any]:
    """Metrics of generation ``g`` (written to ``gen-XXX/metrics.json``) and its map plot."""
    from advmd.attacks import committee_statistics
    from advmd.committee import load_trainable_committee
    from advmd.train import evaluate

    committee, metadata = load_trainable_committee(model_path)
    with np.load(runner.directory / "holdout.npz") as f:
        holdout = {k: f[k] for k in f.files}
    numbers = holdout["numbers"]
    result: Dict[str, Any] = {"generation": g}
    scores = evaluate(committee, _structure_set(numbers, holdout["positions"], holdout["energies"], holdout["forces"]))
    result["holdout"] = {k: scores[k] for k in ("n_structures", "mean_energy_rmse", "mean_force_rmse", "mean_force_mae")}
    _, holdout_sigma = committee_statistics(committee, numbers, holdout["positions"])
    result["uncertainty"] = {
        "threshold": metadata["uncertainty_threshold"]["sigma_f2"],
        "holdout_median": float(np.median(holdout_sigma)),
        "holdout_max": float(np.max(holdout_sigma)),
    }
    grid_sigma = None
    if "grid_energies" in holdout:
        cap = float(runner.config["selection"]["energy_cap"]) or np.inf
        keep = holdout["grid_energies"] < holdout["grid_energies"].min() + cap
        grid_scores = evaluate(
            committee,
            _structure_set(
                numbers, holdout["grid_positions"][keep], holdout["grid_energies"][keep], holdout["grid_forces"][keep]
            ),
        )
        result["grid"] = {
            "n_points": int(keep.sum()),
            "energy_window_ev": cap,
            "mean_energy_rmse": grid_scores["mean_energy_rmse"],
            "mean_force_rmse": grid_scores["mean_force_rmse"],
        }
        grid_energy, grid_sigma = committee_statistics(committee, numbers, holdout["grid_positions"])
    dataset = runner.dataset
    # as of generation g (a resumed or extended run holds later rows too): initial data and rows of generations <= g
    rows = [r for r in dataset.rows(label_status="done") if r.get("source") == "initial" or r.generation <= g]
    positions = np.array([r.positions for r in rows]) if rows else np.zeros((0, len(numbers), 3))
    generations = np.array([r.generation if r.get("source") != "initial" else -1 for r in rows])
    cv = collective_variables(runner.system, positions)
    result["coverage"] = _coverage(runner.system, cv, int(runner.config["system"]["grid"]))
    new = [r for r in rows if r.get("source") != "initial" and r.generation == g]
    result["labels"] = {
        "total": len(rows),
        "new": len(new),
        "failed": sum(1 for r in dataset.rows(label_status="failed") if r.get("source") == "initial" or r.generation <= g),
        "new_mean_energy": float(np.mean([r.energy for r in new])) if new else None,
    }
    if selection is not None:
        sigmas = selection["selected_sigma_f2"]
        result["selection"] = {
            "counts": selection["counts"],
            "per_source": selection["per_source"],
            "selected_sigma_f2_median": float(np.median(sigmas)) if sigmas else None,
            "selected_sigma_f2_max": float(np.max(sigmas)) if sigmas else None,
            "candidates_sigma_f2_median": selection["candidates_sigma_f2_median"],
            "candidates_sigma_f2_max": selection["candidates_sigma_f2_max"],
        }
    walkers = [c["walker_stable"] for c in candidates if "walker_stable" in c]
    if walkers:
        stable = np.concatenate(walkers)
        result["md"] = {"walkers": int(len(stable)), "stable_fraction": float(np.mean(stable))}
    folder = runner.directory / f"gen-{g:03d}"
    if cv is not None:
        if runner.system == "double-well":
            grid_cv = holdout["positions"][:, 0, :2]
            grid_energy, grid_sigma = committee_statistics(committee, numbers, holdout["positions"])
        else:
            grid_cv = holdout["grid_cv"]
        _plot_map(runner.system, grid_cv, grid_energy, grid_sigma, cv, generations, g, folder / "map.png")
    write_text_atomic(folder / "metrics.json", json.dumps(result, indent=1))
    return result


def _plot_map(system, grid_cv, energy, sigma, cv, generations, g, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = ("phi (rad)", "psi (rad)") if system == "alanine" else ("x (A)", "y (A)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, values, title in (
        (axes[0], energy - np.min(energy), "committee energy above min (eV)"),
        (axes[1], np.log10(np.maximum(sigma, 1e-12)), "log10 sigma_F^2 ((eV/A)^2)"),
    ):
        image = ax.tricontourf(grid_cv[:, 0], grid_cv[:, 1], values, levels=20, cmap="viridis")
        fig.colorbar(image, ax=ax, label=title)
        initial = generations < 0
        ax.scatter(cv[initial, 0], cv[initial, 1], s=6, c="white", edgecolors="k", linewidths=0.3, label="initial")
        if np.any(~initial):
            ax.scatter(cv[~initial, 0], cv[~initial, 1], s=14, c="red", marker="x", linewidths=0.8, label="selected")
        ax.set_xlabel(label[0])
        ax.set_ylabel(label[1])
    axes[0].legend(loc="upper right", fontsize=7)
    fig.suptitle(f"generation {g}")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot_learning_curves(summary: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = [m["generation"] for m in summary]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(g, [m["holdout"]["mean_energy_rmse"] for m in summary], "o-", label="held-out")
    axes[1].plot(g, [m["holdout"]["mean_force_rmse"] for m in summary], "o-", label="held-out")
    if all("grid" in m for m in summary):
        axes[0].plot(g, [m["grid"]["mean_energy_rmse"] for m in summary], "s--", label="CV grid")
        axes[1].plot(g, [m["grid"]["mean_force_rmse"] for m in summary], "s--", label="CV grid")
    axes[0].set_ylabel("energy RMSE (eV)")
    axes[1].set_ylabel("force RMSE (eV/A)")
    axes[2].plot(g, [m["labels"]["total"] for m in summary], "o-", label="labels")
    axes[2].set_ylabel("labelled structures")
    if all(m.get("coverage") is not None for m in summary):
        twin = axes[2].twinx()
        twin.plot(g, [m["coverage"] for m in summary], "s--", color="C1")
        twin.set_ylabel("CV coverage", color="C1")
    for ax in axes:
        ax.set_xlabel("generation")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
