"""Export: one TorchScript file with metadata; save/load/re-save keeps outputs and metadata."""

import json
import zipfile

import pytest
import torch

from advmd.committee import export_committee, load_committee, read_metadata
from advmd.errors import ModelFileError
from tests.conftest import SPECIES, small_potential


def test_export_round_trip_keeps_outputs_and_metadata(alanine, tmp_path):
    potential = small_potential("udd", width=0.05)
    path = export_committee(potential, tmp_path / "committee.pt", default_strength=0.25, extra_metadata={"threshold": 0.1})
    metadata = read_metadata(path)
    assert metadata["species"] == SPECIES
    assert metadata["cutoff"] == pytest.approx(4.0)
    assert metadata["n_members"] == 4
    assert metadata["units"] == {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom"}
    assert metadata["bias"]["form"] == "udd"
    assert metadata["bias"]["parameters"] == {"n_members": 4, "width": 0.05}
    assert metadata["bias"]["default_strength"] == 0.25
    assert metadata["bias"]["strength_unit"] == "energy"
    assert metadata["torch_version"] == torch.__version__
    assert metadata["threshold"] == 0.1
    assert metadata["architecture"]["class"] == "SchNetCommittee"
    assert "M-1" in metadata["statistics"]["sigma_e2"]

    loaded, loaded_metadata = load_committee(path)
    assert loaded_metadata == metadata
    positions, numbers = alanine
    s = torch.tensor(0.25, dtype=torch.float64)
    a = potential(positions, numbers, None, s)
    b = loaded(positions, numbers, None, s)
    for key in ("energy", "forces", "sigma_f2", "bias_energy"):  # eager vs scripted: the executor may fuse ops
        torch.testing.assert_close(b[key], a[key], atol=1e-12, rtol=1e-12)

    # Re-save the loaded module: same outputs, same species/bias record.
    again = export_committee(loaded, tmp_path / "again.pt", default_strength=0.25, extra_metadata={"threshold": 0.1})
    reloaded, again_metadata = load_committee(again)
    for key in ("species", "cutoff", "n_members", "bias", "units", "threshold"):
        assert again_metadata[key] == metadata[key]
    c = reloaded(positions, numbers, None, s)
    torch.testing.assert_close(c["forces"], b["forces"], atol=0, rtol=0)  # scripted vs re-saved: bit for bit


def test_metadata_is_read_from_the_archive_without_torch(tmp_path):
    path = export_committee(small_potential(), tmp_path / "m.pt")
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("extra/advmd_metadata.json")]
        assert len(names) == 1
        assert json.loads(archive.read(names[0]))["n_members"] == 4


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        read_metadata(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(ModelFileError, match="corrupt or not a TorchScript archive"):
        load_committee(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(foreign))
    with pytest.raises(ModelFileError, match="not written by advmd"):
        read_metadata(foreign)
    # A truncated archive (a crash mid-copy) is refused, not half-loaded.
    good = export_committee(small_potential(), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError):
        load_committee(truncated)


def test_export_rejects_bad_default_strength(tmp_path):
    with pytest.raises(ValueError, match="default_strength must be >= 0 for bias form 'udd'"):
        export_committee(small_potential("udd", width=0.05), tmp_path / "x.pt", default_strength=-1.0)
    with pytest.raises(ValueError, match="default_strength must be a finite number"):
        export_committee(small_potential(), tmp_path / "x.pt", default_strength=float("nan"))
    assert not (tmp_path / "x.pt").exists()


def test_a_scripted_mlp_committee_exports_metadata_that_rebuilds_it(tmp_path):
    """Exporting an already scripted potential reads the architecture from attributes: those of its own class."""
    from advmd.committee import CommitteePotential, load_trainable_committee
    from advmd.committee.mlp import CoordinateMLPCommittee

    committee = CoordinateMLPCommittee(n_atoms=1, species=[1], n_members=3, hidden=(4,), dimensions=2, seed=2).double()
    path = export_committee(torch.jit.script(CommitteePotential(committee)), tmp_path / "mlp.pt")
    rebuilt, _ = load_trainable_committee(path)
    assert rebuilt.hyperparameters() == committee.hyperparameters()
    x = torch.tensor([[[0.3, -0.2, 0.0]]], dtype=torch.float64).expand(3, 1, 3)
    z = torch.tensor([1])
    torch.testing.assert_close(rebuilt(x, z, None), committee(x, z, None), rtol=1e-12, atol=1e-12)
