"""Dataset store: every field round-trips; labelling batches are transactional and resumable."""

import numpy as np
import pytest
from ase import Atoms

from advmd.data import Dataset, DatasetError, Provenance
from advmd.labelers import DoubleWell2D, LabelResult


def points(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Atoms("H", positions=[[x, y, 0.0]]) for x, y in rng.uniform(-1.5, 1.5, size=(n, 2))]


def test_labelled_round_trip_keeps_every_field(tmp_path):
    ds = Dataset(tmp_path / "d.db")
    molecule = Atoms("OH2", positions=[[0, 0, 0.1], [0.76, 0, -0.45], [-0.77, 0.05, -0.47]])
    forces = np.arange(9.0).reshape(3, 3) * 0.1
    provenance = Provenance("attack-dihedral", generation=3, parent_id=7, uncertainty=0.42, selection={"steps": 1000, "lr": 5e-3})
    (row_id,) = ds.add(
        [molecule], provenance, energies=[-12.5], forces=[forces], labeler="xtb", labeler_settings={"method": "GFN2-xTB"}
    )
    reopened = Dataset(tmp_path / "d.db", create=False)
    row = reopened.db.get(id=row_id)
    np.testing.assert_array_equal(row.positions, molecule.positions)
    np.testing.assert_array_equal(row.numbers, molecule.numbers)
    assert row.energy == -12.5
    np.testing.assert_array_equal(row.forces, forces)
    assert row.source == "attack-dihedral" and row.generation == 3 and row.parent_id == 7
    assert row.uncertainty == pytest.approx(0.42) and row.labeler == "xtb" and row.label_status == "done"
    assert row.data["labeler_settings"] == {"method": "GFN2-xTB"}
    assert row.data["selection"] == {"steps": 1000, "lr": 5e-3}
    assert row.ctime > 0


def test_extxyz_round_trip(tmp_path):
    ds = Dataset(tmp_path / "a.db")
    structures = points(5)
    result = DoubleWell2D().label(structures)
    ds.add(structures, Provenance("initial"), result.energies, result.forces, labeler="double-well-2d")
    ds.add(points(2, seed=9), Provenance("random", generation=1))  # pending rows are not exported
    assert ds.export_extxyz(tmp_path / "a.xyz") == 5
    other = Dataset(tmp_path / "b.db")
    ids = other.import_extxyz(tmp_path / "a.xyz")
    a, b = ds.structure_set(), other.structure_set(ids)
    np.testing.assert_allclose(b.positions, a.positions)
    np.testing.assert_allclose(b.energies, a.energies)
    np.testing.assert_allclose(b.forces, a.forces)


def test_extxyz_round_trip_keeps_provenance_and_file_order(tmp_path):
    ds = Dataset(tmp_path / "a.db")
    structures = points(4)
    result = DoubleWell2D().label(structures)
    first = ds.add(structures[:2], Provenance("initial"), result.energies[:2], result.forces[:2], labeler="dw-a")
    awkward = {"steps": 10, "note": 'a "q" b', "path": "C:\\x", "tab": "a\tb", "eq": "x=1 y=2"}
    attack = Provenance("attack-cartesian", generation=2, parent_id=first[0], uncertainty=0.42, selection=awkward)
    ds.add(structures[2:], attack, result.energies[2:], result.forces[2:], labeler="dw-b", labeler_settings={"eq": 15})
    ds.export_extxyz(tmp_path / "a.xyz", ids=[4, 1, 3, 2])  # any order: the import keeps the file's
    other = Dataset(tmp_path / "b.db")
    other.add(points(1, seed=5), Provenance("random"))  # ids differ between the two datasets
    ids = other.import_extxyz(tmp_path / "a.xyz")
    for new_id, old_id in zip(ids, [4, 1, 3, 2]):
        old, new = ds.db.get(id=old_id), other.db.get(id=new_id)
        np.testing.assert_allclose(new.positions, old.positions)
        assert new.energy == old.energy and new.label_status == "done"
        for key in ("source", "generation", "labeler"):
            assert new.get(key) == old.get(key), key
        assert new.get("uncertainty") == old.get("uncertainty")
        assert new.data["labeler_settings"] == old.data["labeler_settings"]
        origin = new.data["selection"].pop("imported_from")
        assert new.data["selection"] == old.data["selection"]
        assert origin["file"] == "a.xyz" and origin["dataset_id"] == old_id and origin.get("parent_id") == old.get("parent_id")
        assert new.get("parent_id") is None  # an id of the other dataset means nothing here


def test_split_is_reproducible_disjoint_complete_and_stable_as_rows_are_added(tmp_path):
    ds = Dataset(tmp_path / "s.db")
    structures = points(200)
    result = DoubleWell2D().label(structures)
    ds.add(structures[:50], Provenance("initial"), result.energies[:50], result.forces[:50], labeler="dw")
    train, val, test = ds.split((0.6, 0.2, 0.2), seed=4)
    assert set(train) | set(val) | set(test) == set(ds.labelled_ids())
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert ds.split((0.6, 0.2, 0.2), seed=4) == (train, val, test)
    assert ds.split((0.6, 0.2, 0.2), seed=5) != (train, val, test)
    # Rows added later (an active-learning generation) never move an earlier row to another part.
    ds.add(structures[50:], Provenance("md", generation=1), result.energies[50:], result.forces[50:], labeler="dw")
    grown = ds.split((0.6, 0.2, 0.2), seed=4)
    for before, after in zip((train, val, test), grown):
        assert set(before) <= set(after)
    # The fractions hold up to binomial scatter (200 rows: sd of the 0.2 parts 5.7 rows; 4 sd allowed).
    for part, fraction in zip(grown, (0.6, 0.2, 0.2)):
        assert abs(len(part) - fraction * 200) < 4 * np.sqrt(200 * fraction * (1 - fraction))


def test_split_by_key_fills_every_part_of_a_tiny_set_and_checks_fractions():
    from advmd.data.store import split_by_key

    for seed in range(20):  # 4 rows, 10% validation: the key rule alone leaves it empty most of the time
        train, validation = split_by_key([1, 2, 3, 4], (0.9, 0.1), seed)
        assert len(validation) >= 1 and len(train) >= 2 and sorted(train + validation) == [1, 2, 3, 4]
    for n in range(3, 7):  # and training keeps two rows where the keys put most rows in validation
        for seed in range(300):
            train, validation = split_by_key(list(range(1, n + 1)), (0.8, 0.2), seed)
            assert len(train) >= 2 and len(validation) >= 1 and sorted(train + validation) == list(range(1, n + 1))
    with pytest.raises(ValueError, match="summing to 1"):
        split_by_key([1, 2], (0.5, 0.6), 0)


class InterruptingLabeler(DoubleWell2D):
    """Counts labelled structures; raises KeyboardInterrupt (like Ctrl-C) on a chosen batch."""

    def __init__(self, interrupt_on_batch=None):
        self.batches = 0
        self.labelled = 0
        self.interrupt_on_batch = interrupt_on_batch

    def label(self, structures):
        self.batches += 1
        if self.batches == self.interrupt_on_batch:
            raise KeyboardInterrupt
        self.labelled += len(structures)
        return super().label(structures)


def test_interrupted_labelling_resumes_without_relabelling(tmp_path):
    ds = Dataset(tmp_path / "r.db")
    ds.add(points(20), Provenance("md", generation=1))
    first = InterruptingLabeler(interrupt_on_batch=3)
    with pytest.raises(KeyboardInterrupt):
        ds.label_pending(first, batch_size=4, progress=False)
    assert ds.count(label_status="done") == 8 and len(ds.pending_ids()) == 12
    second = InterruptingLabeler()
    assert ds.label_pending(second, batch_size=4, progress=False) == {"done": 12, "failed": 0}
    assert second.labelled == 12  # only the pending rows
    data = ds.structure_set()
    assert len(data) == 20
    expected = DoubleWell2D().label(ds.structures(ds.labelled_ids())).energies
    np.testing.assert_allclose(data.energies, expected)


class FlakyLabeler(DoubleWell2D):
    name = "flaky"

    def label(self, structures):
        result = super().label(structures)
        result.failures[0] = "LabelingError: SCF did not converge"
        result.energies[0] = np.nan
        result.forces[0] = None
        return LabelResult(result.energies, result.forces, result.failures)


def test_failed_structures_are_recorded_and_skipped(tmp_path):
    ds = Dataset(tmp_path / "f.db")
    ds.add(points(6), Provenance("md"))
    assert ds.label_pending(FlakyLabeler(), batch_size=3, progress=False) == {"done": 4, "failed": 2}
    failed = list(ds.rows(label_status="failed"))
    assert len(failed) == 2 and "did not converge" in failed[0].data["label_error"]
    assert len(ds.structure_set()) == 4
    assert ds.reset_failed() == 2 and len(ds.pending_ids()) == 2
    ds.label_pending(DoubleWell2D(), progress=False)
    assert all(r.data.get("label_error", "") == "" for r in ds.rows(label_status="done"))  # old errors cleared


def test_bad_input_and_corrupt_files(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"definitely not sqlite" * 100)
    before = corrupt.read_bytes()
    with pytest.raises(DatasetError, match="not a readable SQLite database.*left untouched"):
        Dataset(corrupt)
    assert corrupt.read_bytes() == before
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(tmp_path / "missing.db", create=False)
    ds = Dataset(tmp_path / "ok.db")
    with pytest.raises(DatasetError, match="no labelled structures"):
        ds.structure_set()
    with pytest.raises(DatasetError, match="no labelled structures to split"):
        ds.split()
    with pytest.raises(DatasetError, match="source 'dream' is not one of"):
        ds.add(points(1), Provenance("dream"))
    with pytest.raises(DatasetError, match=r"forces have shape \(2, 3\), expected \(1, 3\)"):
        ds.add(points(1), Provenance("md"), energies=[0.0], forces=[np.zeros((2, 3))], labeler="x")
    with pytest.raises(DatasetError, match="got 2 energies and 1 force arrays for 1 structures"):
        ds.add(points(1), Provenance("md"), energies=[0.0, 1.0], forces=[np.zeros((1, 3))], labeler="x")
    with pytest.raises(DatasetError, match="structure 1: energy nan or its forces are not finite"):
        ds.add(points(2), Provenance("md"), energies=[0.0, np.nan], forces=[np.zeros((1, 3))] * 2, labeler="x")
    with pytest.raises(DatasetError, match="structure 0: energy 0.0 or its forces are not finite"):
        ds.add(points(1), Provenance("md"), energies=[0.0], forces=[np.full((1, 3), np.inf)], labeler="x")
    assert len(ds) == 0  # nothing written by the failed calls
    ids = ds.add(points(2), Provenance("md"))
    counts = ds.store_labels(ids, [0.5, np.nan], [np.zeros((1, 3))] * 2, {}, "x", {})
    assert counts == {"done": 1, "failed": 1}
    assert "non-finite" in next(ds.rows(label_status="failed")).data["label_error"]
    ds = Dataset(tmp_path / "ok2.db")
    periodic = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[5, 5, 5], pbc=True)
    ds.add([periodic], Provenance("md"), energies=[0.0], forces=[np.zeros((2, 3))], labeler="x")
    with pytest.raises(DatasetError, match="periodic: training on periodic structures is not supported yet"):
        ds.structure_set()
