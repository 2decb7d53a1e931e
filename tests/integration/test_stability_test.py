"""The paper's stability test: parallel short runs, stable fraction and failure times; reproducible."""

import math

import numpy as np
import pytest

from advmd.committee import export_committee
from advmd.md.stability_test import stability_test
from advmd.systems import alanine_dipeptide, resource_path
from tests.conftest import small_potential


def alanine_structure():
    topology, positions = alanine_dipeptide()
    numbers = [a.element.atomic_number for a in topology.atoms()]
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    return numbers, np.asarray(positions._value) * 10.0, bonds


@pytest.mark.parametrize("engine", ["openmm", "batched"])
def test_trained_and_untrained_committees_and_reproducibility(tmp_path, engine):
    numbers, positions, bonds = alanine_structure()
    trained = str(resource_path("alanine-dipeptide-committee.pt"))
    kwargs = dict(
        numbers=numbers,
        positions_angstrom=positions,
        bonds=bonds,
        n_runs=4,
        duration_ps=0.05,
        temperature_range_k=(300, 400),
        processes=2,
        seed=1,
        engine=engine,
    )
    good = stability_test(trained, **kwargs)
    assert good.stable == [True] * 4 and good.stable_fraction == 1.0  # 50 fs at 300-400 K: the trained model holds
    assert all(math.isnan(t) for t in good.failure_time_ps)

    untrained = str(export_committee(small_potential("none"), tmp_path / "untrained.pt"))
    bad = stability_test(untrained, **kwargs)
    assert bad.stable_fraction == 0.0
    assert all(0 < t <= 0.05 for t in bad.failure_time_ps) and all(r for r in bad.reasons)
    assert bad.failure_time_quantiles()["q50"] > 0
    again = stability_test(untrained, **kwargs)
    assert again.failure_time_ps == bad.failure_time_ps  # seeded: the same failures at the same times


def test_a_run_that_diverges_between_two_checks_counts_as_unstable(tmp_path):
    """NaN forces: the committee force refuses the NaN positions before the next check; that run is unstable with
    the engine's reason, and the other runs of the test are not lost."""
    numbers, positions, bonds = alanine_structure()
    potential = small_potential("none")
    potential.committee.energy_scale.fill_(float("nan"))
    model = str(export_committee(potential, tmp_path / "nan.pt"))
    result = stability_test(
        model, numbers, positions, bonds=bonds, n_runs=2, duration_ps=0.01, processes=1, seed=1, engine="openmm"
    )
    assert result.stable == [False, False]
    assert all(r.startswith("engine: positions contain NaN") for r in result.reasons)
    assert all(0 <= t < 0.01 for t in result.failure_time_ps)


@pytest.mark.parametrize("engine", ["openmm", "batched"])
def test_the_steps_after_the_last_check_are_checked_by_both_engines(engine):
    """10 steps at a check interval of 20: the final state is still checked (an impossible distance range fails it).
    The OpenMM engine used to end such a run unchecked and call it stable, unlike the batched engine."""
    numbers, positions, bonds = alanine_structure()
    result = stability_test(
        str(resource_path("alanine-dipeptide-committee.pt")),
        numbers,
        positions,
        bonds=bonds,
        n_runs=1,
        duration_ps=0.005,
        check_interval=20,
        criteria={"distance_ranges": [[6, 6, 50.0, 60.0]]},  # C-C distances of 50-60 A: fails wherever checked
        processes=1,
        seed=1,
        engine=engine,
    )
    assert result.stable == [False] and result.failure_time_ps == [0.005]


def test_ammonia_rule_as_criteria_and_bad_input(tmp_path):
    with pytest.raises(ValueError, match="n_runs \\(--runs\\) must be a positive integer"):
        stability_test("x.pt", [7, 1, 1, 1], np.zeros((4, 3)), n_runs=0)
    with pytest.raises(FileNotFoundError, match="model 'missing.pt' does not exist"):
        stability_test("missing.pt", [7, 1, 1, 1], np.zeros((4, 3)), criteria={"distance_ranges": [[1, 1, 0.80, 2.55]]})
    with pytest.raises(ValueError, match="temperature_range_k"):
        stability_test("x.pt", [7, 1, 1, 1], np.zeros((4, 3)), temperature_range_k=(1000, 500))
    model = str(resource_path("alanine-dipeptide-committee.pt"))
    with pytest.raises(ValueError, match="engine must be 'openmm' or 'batched'"):
        stability_test(model, [7, 1, 1, 1], np.zeros((4, 3)), engine="gpu")
    with pytest.raises(ValueError, match="engine 'batched' runs the unbiased committee"):
        stability_test(model, [7, 1, 1, 1], np.zeros((4, 3)), engine="batched", bias_strength=1.0)


def test_stability_verb(tmp_path):
    import io
    import json

    from advmd.cli import main

    out = io.StringIO()
    code = main(
        [
            "stability",
            "--runs",
            "2",
            "--ps",
            "0.02",
            "--tmin",
            "300",
            "--tmax",
            "300",
            "--processes",
            "2",
            "--json",
            str(tmp_path / "s.json"),
        ],
        out=out,
    )
    assert code == 0 and "stable 2/2 (100%)" in out.getvalue()
    assert json.loads((tmp_path / "s.json").read_text())["stable_fraction"] == 1.0
    batched = io.StringIO()
    argv = ["stability", "--runs", "2", "--ps", "0.02", "--tmin", "300", "--tmax", "300", "--engine", "batched"]
    assert main(argv + ["--json", str(tmp_path / "b.json")], out=batched) == 0
    assert "stable 2/2 (100%)" in batched.getvalue()
    assert json.loads((tmp_path / "b.json").read_text())["settings"]["engine"] == "batched"
