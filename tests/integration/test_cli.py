"""The CLI: info prints metadata; demo runs MD, reports uncertainty, and switches the bias on mid-run."""

import io
import json

import pytest

from advmd.cli import main
from advmd.committee import export_committee
from tests.conftest import small_potential


@pytest.fixture
def model_file(tmp_path):
    return export_committee(small_potential("udd", width=1.0), tmp_path / "c.pt")


def test_info_prints_metadata(model_file):
    out = io.StringIO()
    assert main(["info", str(model_file)], out=out) == 0
    assert json.loads(out.getvalue())["bias"]["form"] == "udd"


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_demo_runs_and_switches_the_bias_on(model_file, backend):
    out = io.StringIO()
    code = main(
        [
            "demo",
            "--model",
            str(model_file),
            "--steps",
            "40",
            "--report-interval",
            "10",
            "--bias-strength",
            "50",
            "--backend",
            backend,
            "--platform",
            "Reference",
            "--timestep",
            "0.2",
        ],
        out=out,
    )
    assert code == 0
    rows = [line.split() for line in out.getvalue().splitlines()]
    rows = [r for r in rows if len(r) == 10 and r[0].isdigit()]
    assert [int(r[0]) for r in rows] == [10, 20, 30, 40]
    bias = [float(r[8]) for r in rows]
    assert bias[0] == 0.0  # strength 0 before step 20
    assert all(b < 0.0 for b in bias[1:])  # switched on at step 20: UDD lowers the energy
    assert all(float(r[5]) > 0 for r in rows)  # sigma_F reported


def test_demo_rejects_bad_arguments(model_file):
    with pytest.raises(SystemExit, match="--bias-strength must be a finite number >= 0"):
        main(["demo", "--model", str(model_file), "--bias-strength", "-5"], out=io.StringIO())
    with pytest.raises(SystemExit, match="--steps \\(0\\)"):
        main(["demo", "--model", str(model_file), "--steps", "0"], out=io.StringIO())


def test_export_changes_the_bias_and_keeps_the_weights(model_file, tmp_path, alanine):
    import torch

    from advmd.committee import load_committee

    out = io.StringIO()
    assert (
        main(
            ["export", str(model_file), "--out", str(tmp_path / "hal.pt"), "--bias", "hal", "--default-strength", "0.2"], out=out
        )
        == 0
    )
    new, metadata = load_committee(tmp_path / "hal.pt")
    old, _ = load_committee(model_file)
    assert metadata["bias"]["form"] == "hal" and metadata["bias"]["default_strength"] == 0.2
    # a second re-export keeps the HAL epsilon and the training rows of its input
    from advmd.committee import CommitteePotential, export_committee, load_trainable_committee, make_bias, read_metadata

    trainable, _ = load_trainable_committee(tmp_path / "hal.pt")
    custom = export_committee(
        CommitteePotential(trainable, make_bias("hal", trainable.n_members, epsilon=1e-3)),
        tmp_path / "custom.pt",
        extra_metadata={"training_ids": [1, 2, 3]},
    )
    main(["export", str(custom), "--out", str(tmp_path / "again.pt"), "--default-strength", "0.3"], out=io.StringIO())
    again = read_metadata(tmp_path / "again.pt")
    assert again["bias"]["parameters"]["epsilon"] == 1e-3 and again["training_ids"] == [1, 2, 3]
    positions, numbers = alanine
    zero = torch.tensor(0.0, dtype=torch.float64)
    torch.testing.assert_close(
        new(positions, numbers, None, zero)["mean_forces"], old(positions, numbers, None, zero)["mean_forces"]
    )


def test_export_tabulate_writes_the_fast_form_and_re_export_recovers_the_exact_model(model_file, tmp_path, alanine):
    import torch

    from advmd.committee import load_committee, read_metadata

    fast_path, exact_path, kept_path = tmp_path / "fast.pt", tmp_path / "exact.pt", tmp_path / "kept.pt"
    out = io.StringIO()
    assert main(["export", str(model_file), "--out", str(fast_path), "--tabulate", "0.025"], out=out) == 0
    assert "filters tabulated every 0.025 A" in out.getvalue()
    # Changing only the bias keeps the tables; --exact drops them.
    assert main(["export", str(fast_path), "--out", str(kept_path), "--bias", "hal"], out=io.StringIO()) == 0
    assert read_metadata(kept_path)["tabulated"]["spacing_angstrom"] == pytest.approx(0.025)
    assert main(["export", str(fast_path), "--out", str(exact_path), "--exact"], out=io.StringIO()) == 0
    fast, metadata = load_committee(fast_path)
    exact, exact_metadata = load_committee(exact_path)
    old, _ = load_committee(model_file)
    assert metadata["tabulated"]["spacing_angstrom"] == pytest.approx(0.025)
    assert "tabulated" not in exact_metadata and not exact.committee.uses_tables
    positions, numbers = alanine
    zero = torch.tensor(0.0, dtype=torch.float64)
    reference = old(positions, numbers, None, zero)
    torch.testing.assert_close(exact(positions, numbers, None, zero)["forces"], reference["forces"], atol=0, rtol=0)
    torch.testing.assert_close(fast(positions, numbers, None, zero)["forces"], reference["forces"], atol=1e-9, rtol=0)
    assert not torch.equal(fast(positions, numbers, None, zero)["forces"], reference["forces"])


def test_bad_input_is_one_line_on_the_console_not_a_traceback(tmp_path):
    """The advmd command reports a user's error (missing file, bad value) in one line with exit status 2;
    --verbose shows the traceback."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "advmd.cli", "md", "--config", str(tmp_path / "nope.toml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("advmd md: config file") and "does not exist" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    verbose = subprocess.run(command[:3] + ["--verbose"] + command[3:], capture_output=True, text=True, timeout=120)
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_loop_generations_from_the_command_line_are_checked_before_any_work(tmp_path):
    config = tmp_path / "loop.toml"
    config.write_text(f'[run]\ndirectory = "{tmp_path / "run"}"\n[system]\nname = "double-well"\n')
    with pytest.raises(ValueError, match=r"\[run\] generations"):
        main(["loop", "--config", str(config), "--generations", "-1"], out=io.StringIO())
    assert not (tmp_path / "run").exists()
