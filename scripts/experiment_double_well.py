"""Paper experiment 1: adversarial vs random sampling on the 2D double well (Eq. 15), many loops.

Each loop is an ``advmd loop`` run (the product's own loop, nothing special-cased):
initial data uniform in [-1.5, 1.5]^2 with E < -2 (one basin), a committee of 4 MLPs,
and per generation either Cartesian attacks (Eq. 13) or the
paper's random baseline (uniform delta in [-1, 1] per coordinate), then the same
selection (Eq. 8 threshold at the 80th percentile, RMSD dedup 0.02, budget 20) and
exact labels. ``--loops`` independent loops per strategy differ in every seed (initial
data, weights, attacks).

Writes ``<out>/report.md``, ``<out>/double-well.png`` and ``<out>/results.json``;
runs go to ``<out>/runs/<strategy>-<k>`` (resumable: rerun to continue).

Usage: python scripts/experiment_double_well.py [--loops 20] [--generations 5] [--workers 2] [--out docs/experiments/double-well]
"""

import argparse
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

STRATEGIES = {
    # paper Methods: Eq. 13 at kT = 5, Adam, 600 steps, learning rate 0.003
    "adversarial": {"kind": "attack-cartesian", "seeds": 20, "steps": 600, "learning_rate": 0.003, "init_std": 0.05, "kt": 5.0},
    "random": {"kind": "random", "seeds": 20, "space": "cartesian", "amplitude": 1.0},
}


def loop_config(strategy: str, k: int, generations: int, runs: Path) -> dict:
    return {
        "run": {"directory": str(runs / f"{strategy}-{k:02d}"), "generations": generations, "seed": 100 + k},
        "system": {"name": "double-well", "initial": 800, "grid": 12},
        "model": {"members": 4, "hidden": [64, 64]},
        "training": {
            "epochs": 400,
            "fine_tune_epochs": 200,
            "batch_size": 32,
            "learning_rate": 5e-3,
            "fine_tune_learning_rate": 5e-3,
            "energy_cap": 0.0,
        },
        "selection": {"budget": 20, "rmsd": 0.02, "energy_cap": 0.0},
        "sources": [dict(STRATEGIES[strategy])],
    }


def run_one(args: tuple) -> dict:
    strategy, k, generations, runs = args
    import torch

    torch.set_num_threads(1)
    from advmd.data import Dataset
    from advmd.loop import load_loop_config, run_loop

    config = load_loop_config(loop_config(strategy, k, generations, Path(runs)))
    start = time.time()
    result = run_loop(config, progress=False)
    wall = time.time() - start
    rows = [r for r in Dataset(Path(config["run"]["directory"]) / "data.db").rows(label_status="done")]
    sampled = {}
    for row in rows:
        if row.get("source") != "initial":
            sampled.setdefault(int(row.generation), []).append(float(row.energy))
    return {
        "strategy": strategy,
        "loop": k,
        "wall_s": wall,
        "rmse": [m["holdout"]["mean_energy_rmse"] for m in result["generations"]],
        "labels": [m["labels"]["total"] for m in result["generations"]],
        "sampled_median_energy": [float(np.median(sampled[g])) if g in sampled else None for g in range(generations)],
        "sampled_count": [len(sampled.get(g, [])) for g in range(generations)],
    }


def quartiles(values):
    values = np.array([v for v in values if v is not None], dtype=float)
    if len(values) == 0:
        return None
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(q2), "q25": float(q1), "q75": float(q3), "n": int(len(values))}


def summarise(results: list, generations: int) -> dict:
    out = {}
    for strategy in STRATEGIES:
        mine = [r for r in results if r["strategy"] == strategy]
        out[strategy] = {
            key: [quartiles([r[key][g] for r in mine]) for g in range(len(mine[0][key]))]
            for key in ("rmse", "labels", "sampled_median_energy")
        }
        out[strategy]["wall_s_total"] = float(sum(r["wall_s"] for r in mine))
    return out


def plot(summary: dict, generations: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colours = {"adversarial": "tab:red", "random": "tab:blue"}
    titles = {
        "rmse": "held-out energy RMSE (eV)",
        "labels": "labelled structures",
        "sampled_median_energy": "sampled energy, median (eV)",
    }
    for ax, key in zip(axes, titles):
        for strategy, colour in colours.items():
            stats = summary[strategy][key]
            gens = [g for g in range(len(stats)) if stats[g] is not None]
            med = [stats[g]["median"] for g in gens]
            ax.plot(gens, med, "-o", color=colour, label=strategy)
            ax.fill_between(gens, [stats[g]["q25"] for g in gens], [stats[g]["q75"] for g in gens], color=colour, alpha=0.25)
        ax.set_xlabel("generation")
        ax.set_title(titles[key], fontsize=10)
        if key != "labels":
            ax.set_yscale("symlog", linthresh=1.0)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=20)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="docs/experiments/double-well")
    args = parser.parse_args()
    out = Path(args.out)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    jobs = [(s, k, args.generations, str(runs)) for k in range(args.loops) for s in STRATEGIES]
    start = time.time()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = []
        for result in pool.imap_unordered(run_one, jobs):
            results.append(result)
            final = result["rmse"][-1]
            print(f"[{len(results)}/{len(jobs)}] {result['strategy']} loop {result['loop']}: final RMSE {final:.3f}", flush=True)
    wall = time.time() - start
    results.sort(key=lambda r: (r["strategy"], r["loop"]))
    summary = summarise(results, args.generations)
    (out / "results.json").write_text(
        json.dumps(
            {
                "settings": {k: v for k, v in vars(args).items()},
                "strategies": STRATEGIES,
                "config_example": loop_config("adversarial", 0, args.generations, runs),
                "wall_s": wall,
                "summary": summary,
                "loops": results,
            },
            indent=1,
        )
    )
    plot(summary, args.generations, out / "double-well.png")
    print(
        json.dumps(
            {
                s: {"final_rmse": summary[s]["rmse"][-1], "final_sampled": summary[s]["sampled_median_energy"][-1]}
                for s in STRATEGIES
            },
            indent=1,
        )
    )
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
