"""The benchmark suite's verdicts, and (slow) one real run of ``advmd bench``."""

import io
import math

import pytest

from advmd.bench import BenchRow


def test_verdicts_compare_against_the_target():
    assert BenchRow("s", "ratio", 1.04, "x", "<= 1.05").verdict() == "ok"
    assert BenchRow("s", "ratio", 1.06, "x", "<= 1.05").verdict() == "MISSED"
    assert BenchRow("s", "speed-up", 12.0, "x", ">= 10").verdict() == "ok"
    assert BenchRow("s", "speed-up", 9.0, "x", ">= 10").verdict() == "MISSED"
    assert BenchRow("s", "time", 3.0, "ms").verdict() == ""


@pytest.mark.slow
def test_bench_runs_and_prints_every_measurement(tmp_path):
    import json

    from advmd.cli import main

    out = io.StringIO()
    assert (
        main(
            [
                "bench",
                "--sizes",
                "22",
                "--repeats",
                "1",
                "--attack-seeds",
                "2",
                "--attack-steps",
                "1",
                "--json",
                str(tmp_path / "b.json"),
            ],
            out,
        )
        == 0
    )
    text = out.getvalue()
    for needle in (
        "ratio committee / one member",
        "ratio TorchForce step / raw call",
        "ratio logged / plain step",
        "ratio OpenMM / ASE steps per second",
        "ratio looped / batched",
        "sigma_F bias: peak RSS",
    ):
        assert needle in text
    rows = json.loads((tmp_path / "b.json").read_text())
    assert all(math.isfinite(r["value"]) and r["value"] >= 0 for r in rows)
    peaks = {r["name"]: r["value"] for r in rows if r["name"].endswith("peak RSS")}
    # A committee with a sigma_F bias holds more than one member's graph: the probes measure each configuration.
    assert peaks["committee M=5, sigma_F bias: peak RSS"] > peaks["one member: peak RSS"]


def test_a_ratio_of_two_timed_functions_is_the_median_of_their_per_repeat_ratios():
    """Neither function the first: median over repeats of t_i / t_j, not the ratio of the two medians."""
    from advmd.bench import _Ratios

    ratios = _Ratios([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [3.0, 2.0, 6.0]])
    assert list(ratios) == [1.0, 2.0, 3.0]  # each to the first
    assert ratios.of(2, 1) == 2.0  # median(3, 1, 2); the ratio of medians would be 1.5
