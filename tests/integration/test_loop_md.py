"""MD exploration of the loop: committee walkers in OpenMM, their frames and stability, a loop with MD sources."""

import numpy as np
import pytest

from advmd.loop import load_loop_config, run_loop
from advmd.loop.sources import md_walker_job
from advmd.systems import alanine_dipeptide, resource_path

MODEL = str(resource_path("alanine-dipeptide-committee.pt"))


def walker(**changes):
    topology, positions = alanine_dipeptide()
    spec = {
        "model": MODEL,
        "numbers": [a.element.atomic_number for a in topology.atoms()],
        "start": np.asarray(positions._value) * 10.0,
        "parent_id": 7,
        "temperature": 300.0,
        "timestep_fs": 0.5,
        "frames": 4,
        "interval": 20,
        "seed": 1,
        "threads": 1,
    }
    spec.update(changes)
    return spec


def test_md_walker_keeps_bonded_frames_and_is_reproducible():
    topology, _ = alanine_dipeptide()
    result = md_walker_job(walker())
    assert result["stable"] and result["frames"].shape == (4, 22, 3) and result["parent_id"] == 7
    assert result["time_ps"] == pytest.approx(4 * 20 * 0.5e-3)
    bonds = np.array([(b[0].index, b[1].index) for b in topology.bonds()])
    start = walker()["start"]
    reference = np.linalg.norm(start[bonds[:, 1]] - start[bonds[:, 0]], axis=1)
    for frame in result["frames"]:
        assert np.abs(np.linalg.norm(frame[bonds[:, 1]] - frame[bonds[:, 0]], axis=1) - reference).max() < 0.15  # thermal
    np.testing.assert_array_equal(md_walker_job(walker())["frames"], result["frames"])  # seeded: same trajectory


def test_md_walker_stops_at_a_broken_bond():
    result = md_walker_job(walker(temperature=60000.0, frames=20))  # far outside the data: bonds break
    assert not result["stable"] and ("bond" in result["reason"] or "OpenMM" in result["reason"])
    assert len(result["frames"]) < 20 and result["time_ps"] < 20 * 20 * 0.5e-3


@pytest.mark.slow
def test_alanine_loop_with_md_sources(tmp_path):
    config = load_loop_config(
        {
            "run": {"directory": str(tmp_path / "run"), "generations": 1},
            "system": {"initial": 12, "interval_ps": 0.5, "holdout": 6, "grid": 4},
            "training": {"fine_tune_epochs": 2},
            "selection": {"budget": 6},
            "sources": [
                {"kind": "md", "walkers": 2, "frames": 5, "interval": 40},
                {"kind": "biased-md", "walkers": 1, "frames": 5, "interval": 40, "bias_strength": 50.0},
            ],
        }
    )
    result = run_loop(config, progress=False)
    first = result["generations"][0]
    stable = np.concatenate([np.load(tmp_path / "run" / "gen-000" / f"candidates-{k}.npz")["walker_stable"] for k in (0, 1)])
    assert first["md"]["walkers"] == 3 == len(stable) and first["md"]["stable_fraction"] == pytest.approx(stable.mean())
    assert first["labels"]["new"] == first["selection"]["counts"]["selected"]
    assert "grid" in first and first["grid"]["n_points"] >= 1 and first["coverage"] > 0
    # each walker was on disk as it finished; once its source's candidates are written, the walker files go
    assert (tmp_path / "run" / "gen-000" / "candidates-0.npz").is_file()
    assert not list((tmp_path / "run").glob("gen-*/walker-*.npz"))


def test_md_walker_stops_when_non_bonded_atoms_collapse():
    # A committee hole seen in the alanine experiment: a methyl H of the acetyl cap (atom 3) fell onto the
    # carbonyl O (atom 5, a 1-4 pair) with every bond intact. The walker must stop there, not keep the frame.
    start = walker()["start"].copy()
    direction = start[3] - start[5]
    start[3] = start[5] + 0.4 * direction / np.linalg.norm(direction)
    result = md_walker_job(walker(start=start, interval=1, frames=3))
    assert not result["stable"] and "atoms 3 and 5" in result["reason"] and "closer than the minimum 0.7" in result["reason"]
    assert len(result["frames"]) == 0
