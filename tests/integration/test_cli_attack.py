"""advmd attack: seeds from a labelled dataset, attack or random baseline, selection, pending rows with provenance."""

import io
import json

import numpy as np
import pytest
import torch

from advmd.attacks import dihedral_angles, peptide_dihedrals
from advmd.attacks.job import parse_dihedrals
from advmd.cli import main
from advmd.committee import read_metadata
from advmd.data import Dataset
from advmd.systems import alanine_dipeptide, resource_path
from tests.conftest import labelled_alanine_db, run_cli

MODEL = str(resource_path("alanine-dipeptide-committee.pt"))

run = run_cli


@pytest.fixture(scope="module")
def labelled_db(tmp_path_factory):
    return labelled_alanine_db(tmp_path_factory.mktemp("attack") / "ala.db", n_frames=6, seed=1)


def copy_db(src, tmp_path):
    dst = tmp_path / "copy.db"
    dst.write_bytes(src.read_bytes())
    return dst


def test_dihedral_attack_adds_selected_rows_with_provenance(labelled_db, tmp_path):
    db = copy_db(labelled_db, tmp_path)
    seeds = Dataset(db).labelled_ids()
    args = ["attack", "--model", MODEL, "--db", str(db), "--n-seeds", "8", "--steps", "15", "--learning-rate", "0.1"]
    args += ["--init-std", "0.5", "--max-new", "4", "--generation", "2", "--seed", "5", "--json", str(tmp_path / "s.json")]
    text = run(*args)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert "attack-dihedral, 8 seeds" in text and f"added {summary['counts']['selected']} pending rows" in text
    assert summary["sigma_f2"]["final_median"] > summary["sigma_f2"]["initial_median"]
    threshold = read_metadata(MODEL)["uncertainty_threshold"]["sigma_f2"]
    dataset = Dataset(db)
    rows = list(dataset.rows(source="attack-dihedral"))
    assert 1 <= len(rows) <= 4 and len(rows) == summary["counts"]["selected"] == len(dataset.pending_ids())
    topology, _ = alanine_dipeptide()
    quadruples = torch.tensor(peptide_dihedrals(topology))
    bonds = np.array([(b[0].index, b[1].index) for b in topology.bonds()])
    for row in rows:
        assert row.generation == 2 and row.label_status == "pending" and row.parent_id in seeds
        assert row.uncertainty > threshold
        assert row.data["selection"]["attack"]["steps"] == 15 and row.data["selection"]["threshold"] == threshold
        parent = dataset.db.get(id=row.parent_id)
        length = lambda x: np.linalg.norm(x[bonds[:, 1]] - x[bonds[:, 0]], axis=1)  # noqa: E731
        np.testing.assert_allclose(length(row.positions), length(parent.positions), atol=1e-4)  # only dihedrals moved
        moved = dihedral_angles(torch.tensor(np.array([row.positions, parent.positions])), quadruples).numpy()
        assert np.abs(np.angle(np.exp(1j * (moved[0] - moved[1])))).max() > 0.05
    uncertainties = [row.uncertainty for row in sorted(rows, key=lambda r: r.id)]
    assert uncertainties == sorted(uncertainties, reverse=True)  # written most uncertain first


def test_random_baseline_and_dry_run(labelled_db, tmp_path):
    db = copy_db(labelled_db, tmp_path)
    text = run("attack", "--model", MODEL, "--db", str(db), "--method", "random", "--n-seeds", "10", "--dry-run")
    assert "random, 10 seeds" in text and "would add" in text
    assert len(Dataset(db)) == 6  # nothing written
    run("attack", "--model", MODEL, "--db", str(db), "--method", "random", "--n-seeds", "10", "--threshold", "0")
    rows = list(Dataset(db).rows(source="random"))
    assert rows and all(r.data["selection"]["method"] == "random" for r in rows)
    # written structures are at least the dedup RMSD away from the labelled data
    from advmd.attacks import rmsd_to_set

    new = np.array([r.positions for r in rows])
    old = np.array([r.positions for r in Dataset(db).rows(label_status="done")])
    assert np.all(rmsd_to_set(new, old, rows[0].numbers) >= 0.1)


def test_cartesian_attack_respects_max_norm(labelled_db, tmp_path):
    db = copy_db(labelled_db, tmp_path)
    run(
        "attack", "--model", MODEL, "--db", str(db), "--space", "cartesian", "--n-seeds", "4", "--steps", "10",
        "--learning-rate", "0.05", "--max-norm", "0.3", "--threshold", "0", "--rmsd", "0", "--energy-cap", "0",
    )  # fmt: skip
    dataset = Dataset(db)
    rows = list(dataset.rows(source="attack-cartesian"))
    assert len(rows) == 4
    for row in rows:
        parent = dataset.db.get(id=row.parent_id)
        assert np.linalg.norm(row.positions - parent.positions) <= 0.3 + 1e-4


def test_attack_bad_input(labelled_db, tmp_path):
    with pytest.raises(ValueError, match="must name four atoms"):
        parse_dihedrals("1-2-3")
    with pytest.raises(ValueError, match="atom indices must be integers"):
        parse_dihedrals("a-b-c-d")
    with pytest.raises(SystemExit, match="does not exist"):
        main(["attack", "--model", MODEL, "--db", str(tmp_path / "missing.db")], out=io.StringIO())
    db = copy_db(labelled_db, tmp_path)
    with pytest.raises(SystemExit, match="n_seeds must be a positive integer"):
        main(["attack", "--model", MODEL, "--db", str(db), "--n-seeds", "0"], out=io.StringIO())
    with pytest.raises(ValueError, match="not bonded"):
        main(["attack", "--model", MODEL, "--db", str(db), "--dihedrals", "0-1-2-3", "--steps", "1"], out=io.StringIO())
