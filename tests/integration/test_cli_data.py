"""CLI data workflow: init -> label -> train -> exported model with threshold and metrics; config errors."""

import io
import json

import pytest

from advmd.cli import main
from advmd.committee import read_metadata
from advmd.data import Dataset
from advmd.train.job import load_config


def run(*argv):
    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


def test_ammonia_init_label_train_export(tmp_path):
    db = tmp_path / "nh3.db"
    assert "added 40 pending ammonia" in run("data", "init", "--system", "ammonia", "--db", str(db), "--n", "40", "--seed", "1")
    assert "labelled 40 structures (0 failed)" in run("label", "--db", str(db), "--labeler", "xtb", "--quiet")
    n = Dataset(db).count(label_status="done")
    assert n == 40
    config = tmp_path / "train.toml"
    config.write_text(
        """
[data]
database = "nh3.db"
split = [0.7, 0.15, 0.15]
[model]
members = 3
features = 8
rbf = 8
interactions = 1
cutoff = 3.0
[training]
epochs = 3
batch_size = 16
[bias]
form = "hal"
default_strength = 0.1
[output]
model = "out/committee.pt"
"""
    )
    text = run("train", "--config", str(config))
    assert "Eq. 8 threshold" in text
    metadata = read_metadata(tmp_path / "out" / "committee.pt")
    assert metadata["bias"]["form"] == "hal" and metadata["bias"]["default_strength"] == 0.1
    assert metadata["uncertainty_threshold"]["percentile"] == 80.0
    assert metadata["uncertainty_threshold"]["sigma_f2"] > 0
    metrics = json.loads((tmp_path / "committee.metrics.json").read_text())
    assert metrics["dataset"]["train"] + metrics["dataset"]["validation"] + metrics["dataset"]["test"] == n
    # the training rows are recorded (Q of Eq. 11-12 for attacks with this committee), and are the split's
    assert metadata["training_ids"] == Dataset(db).split((0.7, 0.15, 0.15), seed=0)[0]
    assert len(metrics["test"]["member_force_rmse"]) == 3
    # fine-tune the next generation from the exported one
    config2 = tmp_path / "gen2.toml"
    config2.write_text(
        """
[data]
database = "nh3.db"
split = [0.7, 0.15, 0.15]
[model]
fine_tune_from = "out/committee.pt"
[training]
epochs = 1
[output]
model = "out/gen2.pt"
checkpoint = "gen2.ckpt"
"""
    )
    run("train", "--config", str(config2))
    gen2 = read_metadata(tmp_path / "out" / "gen2.pt")
    assert gen2["architecture"] == metadata["architecture"] and gen2["dtype"] == metadata["dtype"]
    # export/import round trip through extended XYZ
    run("data", "export", "--db", str(db), str(tmp_path / "nh3.xyz"))
    assert f"imported {n}" in run("data", "import", "--db", str(tmp_path / "copy.db"), str(tmp_path / "nh3.xyz"))


def test_one_particle_data_is_refused_by_the_schnet_trainer(tmp_path):
    db = tmp_path / "dw.db"
    run("data", "init", "--system", "double-well", "--db", str(db), "--n", "300", "--seed", "1")
    run("label", "--db", str(db), "--labeler", "double-well-2d", "--quiet")
    config = tmp_path / "t.toml"
    config.write_text('[data]\ndatabase = "dw.db"\n[training]\nepochs = 1\n')
    with pytest.raises(ValueError, match="one-particle structures"):
        main(["train", "--config", str(config)], out=io.StringIO())


def test_an_element_only_in_validation_or_test_rows_is_refused_before_training(tmp_path):
    """Found up front (the committee could not learn it), not by an index error after the whole training run."""
    import numpy as np
    from ase import Atoms

    from advmd.data import Provenance

    db = tmp_path / "x.db"
    dataset = Dataset(db)
    rng = np.random.default_rng(0)
    water = [Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]] + rng.normal(0, 0.02, (3, 3))) for _ in range(12)]
    zeros = [np.zeros((3, 3))] * len(water)
    dataset.add(water, Provenance("initial"), energies=[0.0] * len(water), forces=zeros, labeler="x")
    nh3 = Atoms("NH3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    (row,) = dataset.add([nh3], Provenance("initial"), energies=[0.0], forces=[np.zeros((4, 3))], labeler="x")
    seed = next(k for k in range(100) if row not in dataset.split((0.8, 0.1, 0.1), seed=k)[0])  # the default split
    config = tmp_path / "t.toml"
    config.write_text(f'[data]\ndatabase = "x.db"\nsplit_seed = {seed}\n[training]\nepochs = 1\n')
    with pytest.raises(ValueError, match="elements Z=\\[7\\] appear only in validation or test rows"):
        main(["train", "--config", str(config)], out=io.StringIO())
    # Fine-tuning a committee that knows nitrogen is fine: it has its reference energy and weights.
    from advmd.committee import CommitteePotential, SchNetCommittee, export_committee

    known = SchNetCommittee([1, 7, 8], n_members=2, n_features=8, n_rbf=6, n_interactions=1, cutoff=3.0)
    export_committee(CommitteePotential(known), tmp_path / "hno.pt")
    config.write_text(
        f'[data]\ndatabase = "x.db"\nsplit_seed = {seed}\n[model]\nfine_tune_from = "hno.pt"\n[training]\nepochs = 1\n'
        '[output]\nmodel = "out.pt"\n'
    )
    assert "out.pt: test committee-mean RMSE" in run("train", "--config", str(config))


def test_example_config_is_the_defaults():
    text = run("example-config")
    config = load_config_from_text(text)
    from advmd.train.job import DEFAULTS

    assert config == DEFAULTS


def load_config_from_text(text):
    import tomllib

    return tomllib.loads(text)


def test_bad_configs_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nmembres = 5\n")
    with pytest.raises(ValueError, match="unknown key 'membres' in \\[model\\]; valid keys are"):
        load_config(bad)
    bad.write_text("[optimiser]\nlr = 1\n")
    with pytest.raises(ValueError, match="unknown section \\[optimiser\\]"):
        load_config(bad)
    bad.write_text("[model\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    # values checked before any training, each naming its field
    for text, message in [
        ('[bias]\nform = "udx"\n', r"\[bias\] form must be one of"),
        ("[output]\nthreshold_percentile = 150\n", r"\[output\] threshold_percentile must be in \(0, 100\]"),
        ('[training]\nepochs = "2"\n', r"\[training\] epochs must be an integer"),
        ("[training]\nlearning_rate = -1.0\n", r"\[training\] learning_rate = -1.0 is out of range"),
        ("[data]\nsplit = [0.9, 0.1]\n", r"\[data\] split must be three fractions"),
        ("[model]\nmembers = 1\n", r"\[model\] members must be an integer >= 2"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_config(bad)
    assert load_config({"data": {"split": (0.8, 0.1, 0.1)}})["data"]["split"] == (0.8, 0.1, 0.1)  # a tuple is a list
    good = tmp_path / "good.toml"
    good.write_text('[data]\ndatabase = "missing.db"\n')
    with pytest.raises(FileNotFoundError, match="database .*missing.db' does not exist"):
        main(["train", "--config", str(good)], out=io.StringIO())


def test_label_retry_failed_relabels_the_failed_rows(tmp_path):
    from ase import Atoms

    from advmd.data import Provenance

    db = tmp_path / "r.db"
    dataset = Dataset(db)
    ids = dataset.add([Atoms("H", positions=[[0.1 * k, 0.2, 0.0]]) for k in range(3)], Provenance("initial"))
    dataset.store_labels(ids[:2], [None, None], [None, None], {0: "SCF failed", 1: "SCF failed"}, "x", {})
    assert "labelled 1 structures (0 failed)" in run("label", "--db", str(db), "--labeler", "double-well-2d", "--quiet")
    text = run("label", "--db", str(db), "--labeler", "double-well-2d", "--quiet", "--retry-failed")
    assert "2 failed structures marked pending again" in text and "labelled 2 structures (0 failed)" in text
    assert Dataset(db).count(label_status="done") == 3
