"""The MD runner: config validation before any step, schedule, clean stop, and exact resume after kill -9."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from advmd.committee import export_committee
from advmd.md.runner import load_md_config, run_md
from tests.conftest import small_potential


def config_text(model, output, steps=60, extra="", interval=5):
    model_line = f'file = "{model}"' if model else ""
    return f"""
[model]
{model_line}
[integrator]
timestep = 0.5
seed = 3
[run]
steps = {steps}
platform = "Reference"
output = "{output}"
checkpoint_interval = 20
minimize = false
[bias]
strength = 0.0
schedule = [[30, 4.0]]
[report]
interval = {interval}
{extra}
"""


@pytest.fixture(autouse=True)
def restore_torchscript_executor():
    """run_md switches TorchScript to its simple executor process-wide; give other tests the default back."""
    from advmd.openmm import use_simple_executor

    before = use_simple_executor(True)
    yield
    use_simple_executor(before)


@pytest.fixture
def model():
    """The shipped, trained alanine dipeptide committee (the config default)."""
    return ""


@pytest.fixture
def untrained_model(tmp_path):
    return export_committee(small_potential("udd", width=1.0), tmp_path / "c.pt")


def rows(path):
    return list(csv.DictReader(open(path)))


def test_run_completes_with_schedule_and_reports(tmp_path, model):
    (tmp_path / "md.toml").write_text(config_text(model, "run"))
    result = run_md(load_md_config(tmp_path / "md.toml"), progress=False)
    assert result.status == "completed" and result.steps == 60
    table = rows(tmp_path / "run" / "uncertainty.csv")
    assert [int(r["step"]) for r in table] == list(range(5, 61, 5))
    strengths = {int(r["step"]): float(r["bias_strength"]) for r in table}
    assert strengths[25] == 0.0 and strengths[35] == 4.0  # the schedule switched the bias on at step 30
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["status"] == "completed"
    again = run_md(load_md_config(tmp_path / "md.toml"), progress=False)  # a finished run is not rerun
    assert again.status == "completed" and len(rows(tmp_path / "run" / "uncertainty.csv")) == 12


def test_interrupted_run_resumes_to_the_same_file(tmp_path, model):
    (tmp_path / "ref.toml").write_text(config_text(model, "ref"))
    run_md(load_md_config(tmp_path / "ref.toml"), progress=False)
    (tmp_path / "cut.toml").write_text(config_text(model, "cut"))
    first = run_md(load_md_config(tmp_path / "cut.toml"), progress=False, stop_after_steps=33)
    assert first.status == "running" and first.steps == 33
    with open(tmp_path / "cut" / "uncertainty.csv", "a") as handle:
        handle.write("35,0.01")  # a torn row, as kill -9 leaves it
    second = run_md(load_md_config(tmp_path / "cut.toml"), progress=False)
    assert second.resumed_from == 20 and second.status == "completed"
    assert (tmp_path / "cut" / "uncertainty.csv").read_text() == (tmp_path / "ref" / "uncertainty.csv").read_text()
    import tables

    with (
        tables.open_file(str(tmp_path / "cut" / "uncertainty.h5")) as cut,
        tables.open_file(str(tmp_path / "ref" / "uncertainty.h5")) as ref,
    ):
        assert cut.root.uncertainty.cols.step[:].tolist() == list(range(5, 61, 5))
        np.testing.assert_array_equal(cut.root.uncertainty.read(), ref.root.uncertainty.read())


def test_auto_platform_is_recorded_and_a_resume_keeps_it(tmp_path, model):
    """platform = "auto" picks Reference for this committee-only System (no GPU here) and records it before the
    first checkpoint; a resume asking for another platform stops with the one the checkpoint needs."""
    import torch

    text = config_text(model, "auto").replace('platform = "Reference"', 'platform = "auto"')
    (tmp_path / "auto.toml").write_text(text)
    first = run_md(load_md_config(tmp_path / "auto.toml"), progress=False, stop_after_steps=25)
    assert first.status == "running" and first.steps == 25
    expected = "CUDA" if torch.cuda.is_available() else "Reference"
    assert json.loads((tmp_path / "auto" / "progress.json").read_text())["platform"] == expected
    (tmp_path / "cpu.toml").write_text(text.replace('platform = "auto"', 'platform = "CPU"'))
    with pytest.raises(ValueError, match=f"platform 'CPU' differs from the platform '{expected}'"):
        run_md(load_md_config(tmp_path / "cpu.toml"), progress=False)
    second = run_md(load_md_config(tmp_path / "auto.toml"), progress=False)
    assert second.resumed_from == 20 and second.status == "completed" and second.steps == 60


def test_resume_reads_the_platform_from_the_checkpoint_when_progress_has_none(tmp_path, model):
    """A run recorded before the platform was (or whose progress.json lost it) resumes on the platform named in
    its checkpoint, whether the config names it or says auto."""
    from advmd.md.runner import _checkpoint_platform

    text = config_text(model, "old")
    (tmp_path / "old.toml").write_text(text)
    run_md(load_md_config(tmp_path / "old.toml"), progress=False, stop_after_steps=25)
    progress = tmp_path / "old" / "progress.json"
    record = json.loads(progress.read_text())
    del record["platform"]
    progress.write_text(json.dumps(record))
    assert _checkpoint_platform(tmp_path / "old" / "state.chk") == "Reference"
    (tmp_path / "auto.toml").write_text(text.replace('platform = "Reference"', 'platform = "auto"'))
    second = run_md(load_md_config(tmp_path / "auto.toml"), progress=False, stop_after_steps=15)
    assert second.resumed_from == 20 and second.steps == 35
    third = run_md(load_md_config(tmp_path / "old.toml"), progress=False)
    assert third.resumed_from == 20 and third.status == "completed"  # still no record: the header decides


def test_unknown_platform_fails_before_any_step(tmp_path, model):
    (tmp_path / "md.toml").write_text(config_text(model, "run").replace('platform = "Reference"', 'platform = "Metal"'))
    with pytest.raises(ValueError, match=r"\[run\] platform must be 'auto' or one of .*'Reference'.*got 'Metal'"):
        load_md_config(tmp_path / "md.toml")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_9_at_a_random_moment_loses_and_duplicates_nothing(tmp_path, model):
    """A real SIGKILL of `advmd md` in a subprocess, then the same command again."""
    (tmp_path / "ref.toml").write_text(config_text(model, "ref", steps=400))
    run_md(load_md_config(tmp_path / "ref.toml"), progress=False)
    (tmp_path / "kill.toml").write_text(config_text(model, "kill", steps=400))
    command = [sys.executable, "-m", "advmd.cli", "md", "--config", str(tmp_path / "kill.toml"), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "kill" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (progress.exists() and json.loads(progress.read_text())["step"] >= 100):
        time.sleep(0.05)
    time.sleep(0.37)  # somewhere between checkpoints
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from step" in done.stdout
    assert (tmp_path / "kill" / "uncertainty.csv").read_text() == (tmp_path / "ref" / "uncertainty.csv").read_text()


def test_steps_after_the_last_report_are_checked_and_logged_and_resume_alike(tmp_path, model):
    """47 steps at interval 5: step 47 is logged and checked before the final checkpoint (it was left unchecked);
    a run cut at 33 resumes from 40 to the same log."""
    (tmp_path / "ref.toml").write_text(config_text(model, "ref", steps=47))
    assert run_md(load_md_config(tmp_path / "ref.toml"), progress=False).status == "completed"
    assert [int(r["step"]) for r in rows(tmp_path / "ref" / "uncertainty.csv")] == list(range(5, 46, 5)) + [47]
    (tmp_path / "cut.toml").write_text(config_text(model, "cut", steps=47))
    run_md(load_md_config(tmp_path / "cut.toml"), progress=False, stop_after_steps=33)
    assert run_md(load_md_config(tmp_path / "cut.toml"), progress=False).status == "completed"
    assert (tmp_path / "cut" / "uncertainty.csv").read_text() == (tmp_path / "ref" / "uncertainty.csv").read_text()


def test_a_temperature_window_not_written_for_the_checkpoint_is_not_reused(tmp_path, model):
    """A kill between the checkpoint and progress.json leaves the window of an older checkpoint: it is dropped."""
    for name, step in (("stale", 0), ("current", 20)):
        (tmp_path / f"{name}.toml").write_text(config_text(model, name))
        run_md(load_md_config(tmp_path / f"{name}.toml"), progress=False, stop_after_steps=33)
        progress = tmp_path / name / "progress.json"
        record = json.loads(progress.read_text())
        assert record["step"] == 20
        record.update(step=step, temperature_window=[1e6] * 4)  # temperatures that would fail the next check
        progress.write_text(json.dumps(record))
    assert run_md(load_md_config(tmp_path / "stale.toml"), progress=False).status == "completed"
    assert run_md(load_md_config(tmp_path / "current.toml"), progress=False).status == "unstable"  # the window is used


def test_unstable_run_stops_cleanly(tmp_path, untrained_model):
    """An untrained committee breaks bonds within tens of femtoseconds: the run stops, recorded."""
    (tmp_path / "md.toml").write_text(config_text(untrained_model, "bad", steps=2000))
    result = run_md(load_md_config(tmp_path / "md.toml"), progress=False)
    assert result.status == "unstable" and result.failure_step < 2000 and result.failure_step % 5 == 0
    assert "bonds" in " ".join(result.reasons) or "min_distance" in " ".join(result.reasons)
    assert (tmp_path / "bad" / "last_good.pdb").exists()
    assert json.loads((tmp_path / "bad" / "progress.json").read_text())["status"] == "unstable"


def test_a_run_that_diverges_between_two_reports_stops_as_unstable(tmp_path):
    """NaN forces put NaN positions into the integrator; the committee force refuses them at the next step, before
    the watchdog's report: the run is recorded as unstable (not a crash that leaves it 'running')."""
    from advmd.md.runner import engine_divergence

    potential = small_potential("udd", width=1.0)
    potential.committee.energy_scale.fill_(float("nan"))  # every energy and force is NaN
    model = export_committee(potential, tmp_path / "nan.pt")
    (tmp_path / "md.toml").write_text(config_text(model, "nan", steps=200, interval=50))
    result = run_md(load_md_config(tmp_path / "md.toml"), progress=False)
    assert result.status == "unstable" and result.failure_step < 50
    diverged = "positions contain NaN or infinite values; the simulation has diverged or the input is corrupt"
    assert result.reasons == [f"engine: {diverged}"]
    record = json.loads((tmp_path / "nan" / "progress.json").read_text())
    assert record["status"] == "unstable" and record["reasons"] == result.reasons
    again = run_md(load_md_config(tmp_path / "md.toml"), progress=False)  # a finished run is not run again
    assert again.status == "unstable" and again.failure_step == result.failure_step
    # Only a divergence counts as one; other engine errors propagate (the run stays resumable).
    assert engine_divergence(RuntimeError("Particle coordinate is NaN.  For more information, see ...")) is not None
    assert engine_divergence(RuntimeError('raise ValueError("positions contain NaN")\nbias strength must be >= 0')) is None


@pytest.mark.parametrize("interval", [5, 7])
def test_every_step_log_has_a_row_per_step_and_resumes_to_the_same_file(tmp_path, model, interval):
    """[report] every_step (python backend): every step logged from the force's own evaluations, also across a
    resume, with report intervals that divide the checkpoint interval and the run (5) and that do not (7)."""
    extra = "every_step = true\n[model]\nbackend = 'python'\n"
    text = config_text(model, "{out}", extra=extra, interval=interval).replace("[model]\n\n", "")
    (tmp_path / "ref.toml").write_text(text.format(out="ref"))
    run_md(load_md_config(tmp_path / "ref.toml"), progress=False)
    reference = rows(tmp_path / "ref" / "uncertainty.csv")
    # 0..59 from the steps' own force evaluations, written at reports, checkpoints and the end of the run; 60 as
    # well, for both intervals: the last step is always reported (the watchdog asks for its energy).
    assert [int(r["step"]) for r in reference] == list(range(61))
    strengths = {int(r["step"]): float(r["bias_strength"]) for r in reference}
    assert strengths[29] == 0.0 and strengths[31] == 4.0  # the schedule switches the bias on at step 30
    (tmp_path / "cut.toml").write_text(text.format(out="cut"))
    run_md(load_md_config(tmp_path / "cut.toml"), progress=False, stop_after_steps=33)
    second = run_md(load_md_config(tmp_path / "cut.toml"), progress=False)
    assert second.resumed_from == 20 and second.status == "completed"
    assert (tmp_path / "cut" / "uncertainty.csv").read_text() == (tmp_path / "ref" / "uncertainty.csv").read_text()


def test_bad_configs_fail_before_any_step(tmp_path, model):
    cases = [
        ("[run]\nsteps = -5\n", "\\[run\\] steps must be a positive integer"),
        ("[report]\ninterval = 0\n", "\\[report\\] interval must be a positive integer"),
        ("[watchdog]\ncriterion = 'vibes'\n", "unknown key 'criterion' in \\[watchdog\\]"),
        ('[model]\nfile = "missing.pt"\n', "\\[model\\] file .*missing.pt' does not exist"),
        ("[integrator]\nkind = 'euler'\n", "\\[integrator\\] kind must be one of"),
        ("[bias]\nschedule = [[10]]\n", "\\[bias\\] schedule must be a list of \\[step, strength\\] pairs"),
        ("[extract]\nenabled = true\nlower = 0.5\nupper = 0.1\n", "\\[extract\\] needs 0 <= lower < upper"),
        ("[report]\nevery_step = true\n", '\\[report\\] every_step = true needs \\[model\\] backend = "python"'),
        ("[report]\nevery_step = 1\n", "\\[report\\] every_step must be true or false"),
        ('[bias]\nstrength = "5"\n', "\\[bias\\] strength must be a number, got '5'"),
        ('[bias]\nschedule = [["a", 1.0]]\n', "\\[bias\\] schedule entry \\[a, 1.0\\] needs a step >= 0"),
        ('[watchdog]\nbond_tolerance = "x"\n', "\\[watchdog\\] bond_tolerance must be a number"),
        ("[report]\nevery_step = true\ninterval = 300000\n[model]\nbackend = 'python'\n", "keeps at most 200000"),
        ("[model]\ncompile = true\n", '\\[model\\] compile = true needs backend = "python"'),
        ("[model]\ncompile = 1\nbackend = 'python'\n", "\\[model\\] compile must be"),
    ]
    for text, message in cases:
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_md_config(tmp_path / "bad.toml")
    assert not (tmp_path / "md-run").exists()  # nothing was started


def test_md_verb_and_its_example_config(tmp_path):
    import io

    from advmd.cli import main
    from advmd.md.runner import MD_DEFAULTS

    out = io.StringIO()
    assert main(["example-config", "md"], out=out) == 0
    import tomllib

    assert tomllib.loads(out.getvalue()) == MD_DEFAULTS
    (tmp_path / "md.toml").write_text(config_text("", "cli", steps=20))
    out = io.StringIO()
    assert main(["md", "--config", str(tmp_path / "md.toml"), "--quiet"], out=out) == 0
    assert "completed 20 steps" in out.getvalue()
    again = io.StringIO()
    assert main(["md", "--config", str(tmp_path / "md.toml"), "--quiet"], out=again) == 0
    assert "had already completed 20 steps; nothing to do" in again.getvalue() and "nan" not in again.getvalue()


def extracted_steps(database):
    from advmd.data import Dataset

    return sorted(r.data["selection"]["step"] for r in Dataset(database).rows(source="md"))


@pytest.mark.parametrize("cut_at", [33, 15], ids=["after-a-checkpoint", "before-the-first-checkpoint"])
def test_resume_keeps_extraction_hdf5_and_temperature_window(tmp_path, model, cut_at):
    extract = "[extract]\nenabled = true\nlower = 0.0\nupper = 1000.0\nmin_spacing = 10\ndatabase = 'frames.db'\n"
    (tmp_path / "ref.toml").write_text(config_text(model, "ref", extra=extract.replace("frames.db", "ref.db")))
    run_md(load_md_config(tmp_path / "ref.toml"), progress=False)
    (tmp_path / "cut.toml").write_text(config_text(model, "cut", extra=extract.replace("frames.db", "cut.db")))
    run_md(load_md_config(tmp_path / "cut.toml"), progress=False, stop_after_steps=cut_at)
    if cut_at > 20:
        window = json.loads((tmp_path / "cut" / "progress.json").read_text())["temperature_window"]
        assert len(window) == 4 and all(t > 0 for t in window)  # reports at 5..20, kept for the resumed watchdog
    (tmp_path / "cut" / "uncertainty.h5").write_bytes(b"corrupted by a kill during a write")
    run_md(load_md_config(tmp_path / "cut.toml"), progress=False)
    assert extracted_steps(tmp_path / "cut.db") == extracted_steps(tmp_path / "ref.db") == list(range(5, 61, 10))
    import tables

    with (
        tables.open_file(str(tmp_path / "cut" / "uncertainty.h5")) as cut,
        tables.open_file(str(tmp_path / "ref" / "uncertainty.h5")) as ref,
    ):
        assert cut.root.uncertainty.cols.step[:].tolist() == ref.root.uncertainty.cols.step[:].tolist()
        np.testing.assert_allclose(
            cut.root.uncertainty.cols.sigma_force_kjmol_nm[:], ref.root.uncertainty.cols.sigma_force_kjmol_nm[:]
        )
