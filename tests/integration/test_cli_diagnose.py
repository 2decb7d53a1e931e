"""advmd diagnose: adversarial directions of the shipped committee against amber14, and its conservative-force checks."""

import json

import numpy as np
import pytest

from advmd.data import Dataset
from advmd.diagnostics import adversarial_directions, committee_labeler
from advmd.systems import resource_path
from tests.conftest import labelled_alanine_db, run_cli

MODEL = str(resource_path("alanine-dipeptide-committee.pt"))

run = run_cli


@pytest.fixture(scope="module")
def labelled_db(tmp_path_factory):
    return labelled_alanine_db(tmp_path_factory.mktemp("diagnose") / "ala.db", n_frames=8, seed=2)


def test_adversarial_verb_matches_the_library_and_writes_its_files(labelled_db, tmp_path):
    out = tmp_path / "diag"
    text = run(
        "diagnose", "adversarial", "--db", str(labelled_db), "--out", str(out), "--relax-structures", "3", "--relax-steps", "2"
    )
    summary = json.loads((out / "adversarial.json").read_text())
    arrays = np.load(out / "adversarial.npz")
    assert (out / "adversarial.png").stat().st_size > 10_000
    assert summary["reference"] == "amber14" and summary["approximate"].startswith("committee:")
    assert "cos(A, F_app): median" in text and "relaxation with the approximate model" in text

    # the same numbers, computed directly from the rows and the committee
    dataset = Dataset(labelled_db)
    rows = [dataset.db.get(id=int(i)) for i in arrays["row_ids"]]
    structures = [row.toatoms() for row in rows]
    committee = committee_labeler(MODEL).label(structures)
    direct = adversarial_directions([r.energy for r in rows], [r.forces for r in rows], committee.energies, committee.forces)
    np.testing.assert_allclose(arrays["cosine"], direct.cosine, atol=1e-6)
    assert summary["adversarial"]["energy_offset_ev"] == pytest.approx(direct.offset, abs=1e-6)
    growth = arrays["relaxation_abs_energy_error"]
    assert growth.shape == (3, 3) and np.all(np.isfinite(growth))
    # step 0 of the relaxation is the unrelaxed error of the same structures (same offset)
    for value in growth[:, 0]:
        assert np.isclose(np.abs(direct.energy_error), value, rtol=1e-6, atol=1e-9).any()
    assert len(arrays["row_ids"]) == 8


def test_a_force_field_can_be_the_approximate_model(labelled_db, tmp_path):
    # amber14 approximating amber14: A = 0 everywhere, every cosine undefined, no crash
    out = tmp_path / "same"
    text = run(
        "diagnose", "adversarial", "--db", str(labelled_db), "--model", "amber14", "--out", str(out), "--relax-structures", "0"
    )
    summary = json.loads((out / "adversarial.json").read_text())
    assert summary["adversarial"]["undefined_cosine"] == 8
    assert summary["adversarial"]["energy_rmse_ev"] < 1e-9 and "relaxation" not in summary
    assert "amber14 approximating amber14" in text


def test_conservative_verb_reports_lambda_and_a_bounded_nve_drift(labelled_db, tmp_path):
    out = tmp_path / "cons"
    text = run(
        "diagnose",
        "conservative",
        "--db",
        str(labelled_db),
        "--structures",
        "3",
        "--nve-ps",
        "0.25",
        "--platform",
        "Reference",
        "--out",
        str(out),
    )
    summary = json.loads((out / "conservative.json").read_text())
    assert summary["structures"] == 3
    # the shipped committee is float32: its autograd Jacobian is symmetric to float32 rounding
    assert summary["lambda_max"] < 1e-3
    nve = summary["nve"]
    assert not nve["diverged"] and nve["degrees_of_freedom"] == 3 * 22 - 3  # the committee keeps the zero momentum
    assert abs(nve["drift_kj_per_mol_per_ps"]) < 2.0
    assert "Jacobian asymmetry lambda" in text and (out / "conservative.png").exists()


def test_bad_models_are_named(labelled_db, tmp_path):
    with pytest.raises(ValueError, match="neither a committee file nor a labeler"):
        run("diagnose", "adversarial", "--db", str(labelled_db), "--model", "gaff", "--out", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run("diagnose", "adversarial", "--db", str(labelled_db), "--model", "missing.pt", "--out", str(tmp_path))


def test_conservative_nve_runs_the_committee_without_the_files_default_bias(labelled_db, tmp_path):
    """The NVE run and the Jacobian see the same potential, the committee mean: a HAL default strength stored in
    the file (advmd export --default-strength) is not switched on in the NVE run."""
    import torch

    from advmd import units
    from advmd.committee import load_committee
    from advmd.diagnostics.run import diagnose_conservative
    from advmd.systems import alanine_dipeptide

    model = tmp_path / "hal.pt"
    run("export", MODEL, "--out", str(model), "--bias", "hal", "--default-strength", "0.5")
    dataset = Dataset(labelled_db)
    atoms = dataset.structures(dataset.labelled_ids()[:1])
    topology, _ = alanine_dipeptide()
    diagnose_conservative(model, atoms, tmp_path / "c", topology=topology, nve_ps=0.001, platform="Reference")
    start = float(np.load(tmp_path / "c" / "conservative.npz")["potential_energy"][0])  # kJ/mol
    potential, _ = load_committee(model)
    z = torch.tensor(atoms[0].numbers)
    out = potential(torch.tensor(atoms[0].positions, dtype=torch.float32), z, None, torch.tensor(0.5))
    biased = float(out["energy"]) * units.EV_TO_KJ_PER_MOL
    mean = float(out["mean_energy"]) * units.EV_TO_KJ_PER_MOL
    assert abs(biased - mean) > 0.1  # the file's bias would be visible
    assert start == pytest.approx(mean, abs=1e-3)
