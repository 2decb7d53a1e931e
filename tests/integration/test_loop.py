"""advmd loop: a double-well loop lowers the error; kill-and-resume gives the same dataset; Dask; config errors."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from advmd.cli import main
from advmd.data import Dataset
from advmd.loop import load_loop_config, run_loop

DOUBLE_WELL = {
    "run": {"generations": 2, "seed": 3},
    "system": {"name": "double-well", "initial": 400, "grid": 12},
    "model": {"members": 4, "hidden": [32, 32]},
    "training": {
        "epochs": 400,
        "fine_tune_epochs": 200,
        "batch_size": 32,
        "learning_rate": 5e-3,
        "fine_tune_learning_rate": 4e-3,
        "energy_cap": 10.0,
    },
    "selection": {"budget": 10, "rmsd": 0.02, "energy_cap": 4.0},
    "sources": [
        {
            "kind": "attack-cartesian",
            "seeds": 20,
            "steps": 150,
            "learning_rate": 0.02,
            "init_std": 0.05,
            "kt": 0.5,
            "max_norm": 0.6,
        }
    ],
}


def config_for(directory, **changes):
    raw = json.loads(json.dumps(DOUBLE_WELL))
    raw["run"]["directory"] = str(directory)
    for section, values in changes.items():
        if section == "sources":
            raw["sources"] = values
        else:
            raw.setdefault(section, {}).update(values)
    return load_loop_config(raw)


def dataset_rows(directory):
    return [
        (
            r.source,
            r.generation,
            r.label_status,
            np.round(r.positions, 6).tolist(),
            round(r.energy, 6) if r.get("energy") else None,
        )
        for r in Dataset(directory / "data.db").rows()
    ]


def test_double_well_loop_lowers_the_error(tmp_path):
    result = run_loop(config_for(tmp_path / "run"), progress=False)
    generations = result["generations"]
    assert [m["generation"] for m in generations] == [0, 1, 2]
    first, last = generations[0], generations[-1]
    assert last["holdout"]["mean_energy_rmse"] < 0.8 * first["holdout"]["mean_energy_rmse"]
    assert last["labels"]["total"] > first["labels"]["total"]
    assert generations[0]["selection"]["counts"]["selected"] >= 1
    # selected rows carry provenance, their sigma_F^2 passed the Eq. 8 threshold of their generation
    rows = [r for r in Dataset(tmp_path / "run" / "data.db").rows() if r.source != "initial"]
    for row in rows:
        threshold = generations[row.generation]["uncertainty"]["threshold"]
        assert row.uncertainty > threshold and row.label_status == "done" and row.parent_id >= 1
        assert row.positions[0, 2] == 0.0  # the model ignores z, so attacks leave it at the seed's value
    for g in range(3):
        assert (tmp_path / "run" / f"gen-{g:03d}" / "committee.pt").is_file()
        assert (tmp_path / "run" / f"gen-{g:03d}" / "map.png").stat().st_size > 10_000
    assert (tmp_path / "run" / "learning-curves.png").is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary[-1]["holdout"] == last["holdout"]
    # generation 0 trains from scratch at learning_rate; later ones fine-tune at fine_tune_learning_rate
    from advmd.committee import read_metadata

    loop = [read_metadata(tmp_path / "run" / f"gen-{g:03d}" / "committee.pt")["loop"] for g in range(3)]
    assert [m["fine_tuned"] for m in loop] == [False, True, True]
    assert [m["learning_rate"] for m in loop] == [5e-3, 4e-3, 4e-3]
    # each committee records its training rows (Q of Eq. 11-12 for its attacks): labelled rows, without the validation ones
    labelled = set(Dataset(tmp_path / "run" / "data.db").labelled_ids())
    for g in range(3):
        metadata = read_metadata(tmp_path / "run" / f"gen-{g:03d}" / "committee.pt")
        training = metadata["training_ids"]
        assert 0 < len(training) < len(labelled) and set(training) < labelled
        # the Eq. 8 threshold is calibrated on exactly those rows (as 'advmd train' does), not on validation rows too
        assert metadata["uncertainty_threshold"]["n_structures"] == len(training)
    # rerunning the finished loop recomputes the metrics as of each generation, not of the final dataset
    again = run_loop(config_for(tmp_path / "run"), progress=False)["generations"]
    assert [m["labels"]["total"] for m in again] == [m["labels"]["total"] for m in generations]
    assert [m["coverage"] for m in again] == [m["coverage"] for m in generations]


@pytest.mark.slow  # a real kill -9 of a loop process, then two loops: ~40 s on 2 cores
def test_resume_after_kill_gives_the_same_dataset(tmp_path):
    reference = tmp_path / "reference"
    run_loop(config_for(reference), progress=False)
    # Kill a real process mid-run (inside generation 1: its committee exists, labels may not), then resume.
    killed = tmp_path / "killed"
    config = tmp_path / "loop.toml"
    config.write_text(
        f'[run]\ndirectory = "{killed}"\ngenerations = 2\nseed = 3\n'
        '[system]\nname = "double-well"\ninitial = 400\ngrid = 12\n'
        "[model]\nmembers = 4\nhidden = [32, 32]\n"
        "[training]\nepochs = 400\nfine_tune_epochs = 200\nbatch_size = 32\nlearning_rate = 5e-3\n"
        "fine_tune_learning_rate = 4e-3\n"
        "energy_cap = 10.0\n"
        "[selection]\nbudget = 10\nrmsd = 0.02\nenergy_cap = 4.0\n"
        '[[sources]]\nkind = "attack-cartesian"\nseeds = 20\nsteps = 150\nlearning_rate = 0.02\ninit_std = 0.05\n'
        "kt = 0.5\nmax_norm = 0.6\n"
    )
    process = subprocess.Popen([sys.executable, "-m", "advmd.cli", "loop", "--config", str(config), "--quiet"])
    deadline = time.time() + 120
    while not (killed / "gen-001" / "committee.pt").is_file():
        assert process.poll() is None and time.time() < deadline, "the loop ended or stalled before generation 1"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").is_file()
    # an interrupted stage in the middle of selection: the rows were written, selection.json was not
    run_loop(load_loop_config(config), progress=False)
    assert dataset_rows(killed) == dataset_rows(reference)
    # rerunning a finished run changes nothing
    run_loop(load_loop_config(config), progress=False)
    assert dataset_rows(killed) == dataset_rows(reference)


def test_crash_between_row_commit_and_selection_record_does_not_duplicate(tmp_path, monkeypatch):
    # two sources: their rows go in together, in one transaction
    sources = DOUBLE_WELL["sources"] + [{"kind": "random", "seeds": 10, "amplitude": 0.4}]
    reference = tmp_path / "reference"
    run_loop(config_for(reference, run={"generations": 1}, sources=sources), progress=False)
    assert {r.source for r in Dataset(reference / "data.db").rows()} == {"initial", "attack-cartesian", "random"}
    crashed = tmp_path / "crashed"
    run_loop(config_for(crashed, run={"generations": 1}, sources=sources), progress=False)
    (crashed / "gen-000" / "selection.json").unlink()  # as if killed right after the rows' transaction
    (crashed / "summary.json").unlink()
    run_loop(config_for(crashed, run={"generations": 1}, sources=sources), progress=False)
    assert dataset_rows(crashed) == dataset_rows(reference)
    # The record is rebuilt against the dataset without the rows it had added (labelled since): the same counts.
    record = json.loads((reference / "gen-000" / "selection.json").read_text())
    assert json.loads((crashed / "gen-000" / "selection.json").read_text()) == record
    assert record["counts"]["selected"] == len(record["ids"]) > 0

    # A structure whose labelling failed is known to the deduplication; this generation's own rows are not.
    import advmd.attacks as attacks_module
    from advmd.loop.runner import LoopRunner

    seen = {}
    original = attacks_module.select

    def spy(*args, **kwargs):
        seen["reference"] = kwargs["reference"]
        return original(*args, **kwargs)

    monkeypatch.setattr(attacks_module, "select", spy)
    dataset = Dataset(crashed / "data.db")
    victim = next(iter(dataset.rows(source="initial")))
    dataset.db.update(victim.id, label_status="failed")
    (crashed / "gen-000" / "selection.json").unlink()
    runner = LoopRunner(config_for(crashed, run={"generations": 1}, sources=sources), progress=False)
    model = crashed / "gen-000" / "committee.pt"
    runner._select(0, model, runner._explore(0, model))
    known = seen["reference"].reshape(len(seen["reference"]), -1)
    assert np.any(np.all(np.isclose(known, victim.positions.reshape(-1)), axis=1))
    for row_id in record["ids"]:
        added = dataset.db.get(id=row_id).positions.reshape(-1)
        assert not np.any(np.all(np.isclose(known, added), axis=1))


def test_labelling_that_crashes_keeps_every_finished_chunk(tmp_path, monkeypatch):
    """Labels are stored chunk by chunk: a crash in the third of four chunks keeps the first two, and the next run
    labels only the rest (with the same labels a run without the crash gives)."""
    import advmd.loop.runner as runner_module
    from advmd.loop.runner import LoopRunner

    original = runner_module._label_chunk
    labelled = []

    def crash_on_third(spec):
        if len(labelled) == 2:
            raise RuntimeError("worker lost")
        labelled.append(len(spec["ids"]))
        return original(spec)

    monkeypatch.setattr(runner_module, "_label_chunk", crash_on_third)
    runner = LoopRunner(config_for(tmp_path / "crash"), progress=False)
    runner._check_config()
    with pytest.raises(RuntimeError, match="worker lost"):
        runner._initialise()
    dataset = Dataset(tmp_path / "crash" / "data.db")
    done = len(list(dataset.rows(label_status="done")))
    assert len(labelled) == 2 and done == sum(labelled) > 0  # the two finished chunks, stored
    assert len(dataset.pending_ids()) == len(dataset) - done > 0

    monkeypatch.setattr(runner_module, "_label_chunk", original)
    LoopRunner(config_for(tmp_path / "crash"), progress=False)._initialise()
    LoopRunner(config_for(tmp_path / "clean"), progress=False)._initialise()
    assert dataset_rows(tmp_path / "crash") == dataset_rows(tmp_path / "clean")
    # provenance: the labeler's own name and settings, not the configuration's shorthand
    from advmd.labelers import DoubleWell2D

    for row in Dataset(tmp_path / "crash" / "data.db").rows():
        assert row.labeler == DoubleWell2D.name and row.data["labeler_settings"] == DoubleWell2D().settings()


def test_executors_yield_each_result_as_it_completes():
    from advmd.loop import make_executor

    for workers in (1, 2):
        with make_executor(workers=workers) as executor:
            assert sorted(executor.as_completed(abs, [-3, 2, -1])) == [(0, 3), (1, 2), (2, 1)]


def test_held_out_structures_that_fail_to_label_are_left_out_not_fatal():
    """One failed held-out label (an SCF on a clash of the CV grid) used to stop every resume of the run."""
    from ase import Atoms

    from advmd.loop.metrics import _label

    structures = [Atoms("H", positions=[[x, 0.2, 0.0]]) for x in (-1.0, 0.5, 1.0)]
    structures[1].positions[0, 0] = np.nan
    energies, forces, ok = _label(structures, {"name": "double-well-2d", "options": {}})
    assert ok.tolist() == [0, 2] and energies.shape == (2,) and forces.shape == (2, 1, 3) and np.isfinite(energies).all()
    with pytest.raises(RuntimeError, match="failed on every held-out structure"):
        _label(structures[1:2], {"name": "double-well-2d", "options": {}})


def _set_one_thread(value):
    import torch

    torch.set_num_threads(1)  # as an exploration job sets its [executor] threads
    return value


def test_in_process_jobs_leave_the_thread_count_of_the_main_process_alone():
    """Training after a serial exploration must run with the process's own thread count, as with worker processes."""
    import torch

    from advmd.loop import make_executor

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with make_executor(workers=1) as executor:
            assert executor.map(_set_one_thread, [1, 2]) == [1, 2]
            assert torch.get_num_threads() == 2
            assert list(executor.as_completed(_set_one_thread, [3])) == [(0, 3)]
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # a 2-process LocalCluster imports torch in each worker: ~50 s on 2 cores
def test_dask_local_cluster_runs_a_generation(tmp_path):
    distributed = pytest.importorskip("distributed")
    from advmd.loop import DaskExecutor

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            executor = DaskExecutor(client)
            config = config_for(tmp_path / "dask", run={"generations": 1})
            result = run_loop(config, executor=executor, progress=False)
            assert executor.client.run(os.getpid)  # jobs really went to worker processes
    serial = run_loop(config_for(tmp_path / "serial", run={"generations": 1}), progress=False)
    assert dataset_rows(tmp_path / "dask") == dataset_rows(tmp_path / "serial")
    assert result["generations"][-1]["holdout"] == serial["generations"][-1]["holdout"]


def test_process_executor_maps_in_order():
    from advmd.loop import make_executor

    with make_executor(workers=2) as executor:
        assert executor.map(abs, [-3, 2, -1]) == [3, 2, 1]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sources": [{"kind": "metadynamics"}]}, "unknown kind 'metadynamics'"),
        ({"selection": {"budget": 0}}, r"\[selection\] budget must be an integer >= 1"),
        ({"labeler": {"name": "nonsense"}}, r"\[labeler\]"),
        ({"model": {"kind": "schnet"}}, "cannot represent the one-particle double well"),
        ({"sources": [{"kind": "md"}]}, "MD sources run the committee in OpenMM"),
        ({"sources": [{"kind": "attack-cartesian", "steps": 0}]}, r"steps must be an integer >= 1"),
        ({"sources": [{"kind": "attack-cartesian", "speed": 2}]}, "unknown key 'speed'"),
        ({"executor": {"workers": 0}}, r"\[executor\] workers must be an integer >= 1"),
        ({"executor": {"scheduler": 8786}}, r"\[executor\] scheduler must be a Dask scheduler address"),
        ({"labeler": {"name": "xtb", "options": {"basiss": 1}}}, r"labeler 'xtb': got an unexpected keyword argument 'basiss'"),
        ({"training": {"fine_tune_learning_rate": 0}}, r"\[training\] fine_tune_learning_rate must be a number > 0"),
    ],
)
def test_bad_config_fails_before_work(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        config_for(tmp_path / "never", **changes)
    assert not (tmp_path / "never").exists()


def test_missing_labeler_dependency_is_named(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("tblite"):
            raise ImportError("No module named 'tblite'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ValueError, match=r"\[labeler\] name 'xtb' needs a missing package"):
        load_loop_config({"run": {"directory": str(tmp_path / "x")}, "system": {"name": "ammonia"}, "labeler": {"name": "xtb"}})


def test_changed_config_refuses_to_resume(tmp_path):
    run_loop(config_for(tmp_path / "run", run={"generations": 0}), progress=False)
    with pytest.raises(ValueError, match="started with another configuration"):
        run_loop(config_for(tmp_path / "run", run={"generations": 0}, selection={"budget": 3}), progress=False)


def test_a_directory_whose_set_up_stored_nothing_takes_a_corrected_configuration(tmp_path):
    """The fix an error suggests must be accepted: a run that failed before storing a structure may change settings."""
    from advmd.loop.runner import LoopRunner

    LoopRunner(config_for(tmp_path / "run", system={"initial": 6}), progress=False)._check_config()
    corrected = LoopRunner(config_for(tmp_path / "run", system={"initial": 400}), progress=False)
    corrected._check_config()  # nothing stored yet: accepted, and recorded
    assert json.loads((tmp_path / "run" / "config.json").read_text())["system"]["initial"] == 400
    from ase import Atoms

    from advmd.data import Provenance

    corrected.dataset.add([Atoms("H", positions=[[0.1, 0.2, 0.0]])], Provenance("initial"))
    with pytest.raises(ValueError, match="started with another configuration"):
        LoopRunner(config_for(tmp_path / "run", system={"initial": 12}), progress=False)._check_config()


def test_a_run_whose_every_label_failed_says_how_to_recover(tmp_path):
    from ase import Atoms

    from advmd.data import Provenance
    from advmd.loop.runner import LoopRunner

    runner = LoopRunner(config_for(tmp_path / "run"), progress=False)
    runner._check_config()
    ids = runner.dataset.add([Atoms("H", positions=[[0.1, 0.2, 0.0]])] * 2, Provenance("initial"))
    runner.dataset.store_labels(ids, [None, None], [None, None], {0: "SCF failed", 1: "SCF failed"}, "x", {})
    with pytest.raises(ValueError, match="no labelled structures to train on \\(2 labels failed.*--retry-failed"):
        runner._train(0)


def test_cli_loop_and_example_config(tmp_path):
    out = io.StringIO()
    assert main(["example-config", "loop"], out=out) == 0
    example = out.getvalue()
    assert "[[sources]]" in example and "alanine" in example
    path = tmp_path / "dw.toml"
    path.write_text(
        '[run]\ndirectory = "run"\ngenerations = 1\n[system]\nname = "double-well"\ninitial = 200\n'
        '[training]\nepochs = 50\nfine_tune_epochs = 20\n[[sources]]\nkind = "random"\nseeds = 10\namplitude = 0.3\n'
    )
    out = io.StringIO()
    assert main(["loop", "--config", str(path), "--quiet"], out=out) == 0
    assert "advmd loop: 1 generations" in out.getvalue()
    assert (tmp_path / "run" / "gen-001" / "metrics.json").is_file()  # relative to the config file
    selected = json.loads((tmp_path / "run" / "gen-000" / "selection.json").read_text())["counts"]["selected"]
    assert sum(r.source == "random" for r in Dataset(tmp_path / "run" / "data.db").rows()) == selected
