"""The dataset store: structures, labels and provenance in an ASE database.

Embedded by default (an SQLite file); PostgreSQL works through the same API
(``Dataset("postgresql://user:pw@host/db")``). Each row is one structure with:

* positions, numbers, cell and pbc (Angstrom);
* energy (eV) and forces (eV/Angstrom) once labelled;
* provenance key-value pairs: ``generation``, ``source`` (one of
  :data:`SOURCES`), ``label_status`` (``pending``, ``done`` or ``failed``),
  ``labeler``, ``uncertainty`` (the selection uncertainty, e.g. sigma_F^2 in
  (eV/Angstrom)^2), ``parent_id`` (the row it was derived from); ASE adds the
  creation time ``ctime``;
* row data: ``labeler_settings`` (dict), ``label_error`` (failed rows),
  ``selection`` (free-form dict of how the structure was made).

Labelling is transactional per batch: structures are first stored as
``pending``; each labelled batch is written in one transaction. An
interrupted run leaves every finished batch in place and resumes with the
rows still pending, never relabelling a finished one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["Dataset", "Provenance", "SOURCES", "DatasetError", "split_key", "split_by_key"]

#: Where a structure came from.
SOURCES = ("initial", "md", "attack-cartesian", "attack-dihedral", "random", "imported")
STATUSES = ("pending", "done", "failed")


class DatasetError(ValueError):
    """The database is unreadable, or a request does not fit its content."""


_JSON_PREFIX = "json:"


def _finite_label(energy: Any, forces: Any) -> bool:
    """Whether a label (energy, forces) is finite: only finite labels are stored as ``done``."""
    return bool(np.isfinite(float(energy)) and np.all(np.isfinite(np.asarray(forces, float))))


def split_key(seed: int, row_id: int) -> float:
    """A number in [0, 1) fixed by ``(seed, row_id)``, uniform over rows (BLAKE2b of the pair)."""
    digest = hashlib.blake2b(f"advmd-split:{int(seed)}:{int(row_id)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def split_by_key(ids: Sequence[int], fractions: Tuple[float, ...], seed: int) -> Tuple[List[int], ...]:
    """Parts of ``ids`` by :func:`split_key`: a row goes to the part whose share of [0, 1) holds its key.

    ``fractions`` (two or three non-negative numbers summing to 1) are the shares, in order. A row's
    part depends on its id and the seed alone, never on the other rows. In a set too small for a part
    with a positive fraction to receive a row, the first part's row with the largest key moves there
    (only while the first part keeps two rows).
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) not in (2, 3) or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be two or three non-negative numbers summing to 1, got {fractions!r}")
    edges = np.cumsum(fractions)[:-1]
    parts: List[List[int]] = [[] for _ in fractions]
    keys = {int(i): split_key(seed, int(i)) for i in ids}
    for i in sorted(keys):
        parts[int(np.searchsorted(edges, keys[i], side="right"))].append(i)
    # Too small a set for the key rule: the first part (training) gets at least two rows, taking those
    # with the smallest keys from the others, then each part with a positive fraction gets one, taking the
    # first part's row with the largest key while it keeps two.
    while len(parts[0]) < 2 and any(len(p) > (1 if fractions[k] > 0 else 0) for k, p in enumerate(parts[1:], 1)):
        donors = [i for k, p in enumerate(parts[1:], 1) if len(p) > (1 if fractions[k] > 0 else 0) for i in p]
        moved = min(donors, key=lambda i: keys[i])
        next(p for p in parts[1:] if moved in p).remove(moved)
        parts[0].append(moved)
    for k in range(1, len(parts)):
        if fractions[k] > 0 and not parts[k] and len(parts[0]) > 2:
            moved = max(parts[0], key=lambda i: keys[i])
            parts[0].remove(moved)
            parts[k].append(moved)
    return tuple(sorted(p) for p in parts)


@dataclass
class Provenance:
    """How a structure entered the dataset.

    Attributes
    ----------
    source : str
        One of :data:`SOURCES`.
    generation : int
        Active-learning generation (0 for initial data).
    parent_id : int, optional
        Dataset row the structure was derived from (an attack seed, an MD start).
    uncertainty : float, optional
        Uncertainty at selection (e.g. sigma_F^2, (eV/Angstrom)^2).
    selection : dict
        Free-form settings of the generating step (attack parameters, MD step...).
    """

    source: str = "initial"
    generation: int = 0
    parent_id: Optional[int] = None
    uncertainty: Optional[float] = None
    selection: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise DatasetError(f"provenance source {self.source!r} is not one of {SOURCES}")
        if int(self.generation) != self.generation or self.generation < 0:
            raise DatasetError(f"provenance generation must be an integer >= 0, got {self.generation!r}")
        if self.uncertainty is not None and not np.isfinite(self.uncertainty):
            raise DatasetError(f"provenance uncertainty must be finite, got {self.uncertainty!r}")

    def key_value_pairs(self) -> Dict[str, Any]:
        pairs: Dict[str, Any] = {"source": self.source, "generation": int(self.generation)}
        if self.parent_id is not None:
            pairs["parent_id"] = int(self.parent_id)
        if self.uncertainty is not None:
            pairs["uncertainty"] = float(self.uncertainty)
        return pairs


class Dataset:
    """Labelled structures with provenance in an ASE database.

    Parameters
    ----------
    path : str or path-like
        SQLite file (created if missing) or a ``postgresql://`` URL.
    create : bool
        Create a missing SQLite file; with ``False`` a missing file is an error.

    Examples
    --------
    >>> from ase import Atoms
    >>> ds = Dataset("/tmp/advmd-doctest.db")  # doctest: +SKIP
    >>> ids = ds.add([Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])], Provenance("initial"))  # doctest: +SKIP
    """

    def __init__(self, path: Union[str, os.PathLike], create: bool = True) -> None:
        import ase.db

        self.path = str(path)
        self.is_sql_file = not self.path.startswith(("postgresql://", "postgres://"))
        if self.is_sql_file:
            file = Path(self.path)
            if file.exists():
                self._check_sqlite(file)
            elif not create:
                raise DatasetError(
                    f"dataset {self.path!r} does not exist; create it with advmd data init (or Dataset(path, create=True))"
                )
            else:
                file.parent.mkdir(parents=True, exist_ok=True)
        self.db = ase.db.connect(self.path, type="db" if self.is_sql_file else "postgresql", append=True)

    @staticmethod
    def _check_sqlite(file: Path) -> None:
        try:
            with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as connection:
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as error:
            raise DatasetError(
                f"dataset {str(file)!r} is not a readable SQLite database ({error}); it was left untouched"
            ) from error
        if tables and "systems" not in tables:
            raise DatasetError(
                f"dataset {str(file)!r} is an SQLite file but not an ASE database "
                f"(tables {sorted(tables)}); it was left untouched"
            )

    def __len__(self) -> int:
        return self.db.count()

    def count(self, **selection: Any) -> int:
        """Number of rows matching an ASE selection (e.g. ``label_status="done"``)."""
        return self.db.count(**selection)

    # ------------------------------------------------------------------ writing
    def add(
        self,
        structures: Sequence[Any],
        provenance: Union[Provenance, Sequence[Provenance]],
        energies: Optional[Sequence[float]] = None,
        forces: Optional[Sequence[np.ndarray]] = None,
        labeler: Optional[str] = None,
        labeler_settings: Optional[Dict[str, Any]] = None,
    ) -> List[int]:
        """Add structures in one transaction, pending or already labelled.

        Parameters
        ----------
        structures : sequence of ase.Atoms
        provenance : Provenance or one per structure
        energies : sequence of float, unit eV, optional
            With ``forces`` and ``labeler``: store as labelled.
        forces : sequence of ndarray (N, 3), unit eV/Angstrom, optional
        labeler : str, optional
        labeler_settings : dict, optional

        Returns
        -------
        list of int
            Row ids, in order.
        """
        from ase.calculators.singlepoint import SinglePointCalculator

        structures = list(structures)
        provenances = [provenance] * len(structures) if isinstance(provenance, Provenance) else list(provenance)
        if len(provenances) != len(structures):
            raise DatasetError(f"got {len(provenances)} provenance records for {len(structures)} structures")
        labelled = energies is not None or forces is not None
        if labelled:
            if energies is None or forces is None or labeler is None:
                raise DatasetError("labelled structures need energies, forces and the labeler's name together")
            if len(energies) != len(structures) or len(forces) != len(structures):
                raise DatasetError(
                    f"got {len(energies)} energies and {len(forces)} force arrays for {len(structures)} structures"
                )
        for k, atoms in enumerate(structures):
            provenances[k].validate()
            if not np.all(np.isfinite(atoms.positions)):
                raise DatasetError(f"structure {k} has non-finite positions")
            if labelled and np.shape(forces[k]) != (len(atoms), 3):
                raise DatasetError(f"structure {k}: forces have shape {np.shape(forces[k])}, expected ({len(atoms)}, 3)")
            if labelled and not _finite_label(energies[k], forces[k]):
                raise DatasetError(
                    f"structure {k}: energy {float(energies[k])!r} or its forces are not finite; a label must be finite "
                    "(add the structure unlabelled, or drop it)"
                )
        ids = []
        with self.db:
            for k, atoms in enumerate(structures):
                row_atoms = atoms.copy()
                row_atoms.calc = None
                pairs = provenances[k].key_value_pairs()
                data: Dict[str, Any] = {"selection": provenances[k].selection}
                if labelled:
                    row_atoms.calc = SinglePointCalculator(
                        row_atoms, energy=float(energies[k]), forces=np.asarray(forces[k], float)
                    )
                    pairs.update(label_status="done", labeler=str(labeler))
                    data["labeler_settings"] = dict(labeler_settings or {})
                else:
                    pairs["label_status"] = "pending"
                ids.append(self.db.write(row_atoms, key_value_pairs=pairs, data=data))
        return ids

    def pending_ids(self) -> List[int]:
        return [row.id for row in self.db.select(label_status="pending")]

    def label_pending(
        self, labeler: Any, batch_size: int = 16, progress: bool = True, limit: Optional[int] = None
    ) -> Dict[str, int]:
        """Label every pending row with ``labeler``, one transaction per batch.

        Failed structures are marked ``failed`` with the error kept in row data;
        they are not retried (relabel them with :meth:`reset_failed`).

        Returns
        -------
        dict
            Counts ``{"done": ..., "failed": ...}`` of this call.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ids = self.pending_ids()
        if limit is not None:
            ids = ids[:limit]
        counts = {"done": 0, "failed": 0}
        bar = _progress(len(ids), f"labelling with {labeler.name}", progress)
        settings = labeler.settings()
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            structures = [self.db.get(id=i).toatoms() for i in batch]
            result = labeler.label(structures)
            energies = [None if k in result.failures else float(result.energies[k]) for k in range(len(batch))]
            forces = [None if k in result.failures else result.forces[k] for k in range(len(batch))]
            stored = self.store_labels(batch, energies, forces, result.failures, labeler.name, settings)
            counts["done"] += stored["done"]
            counts["failed"] += stored["failed"]
            bar.update(len(batch))
        bar.close()
        return counts

    def store_labels(
        self,
        ids: Sequence[int],
        energies: Sequence[Optional[float]],
        forces: Sequence[Optional[np.ndarray]],
        failures: Dict[int, str],
        labeler: str,
        settings: Dict[str, Any],
    ) -> Dict[str, int]:
        """Write labels computed elsewhere (e.g. by worker processes) for rows ``ids``, in one transaction.

        ``failures`` maps positions in ``ids`` to error messages; those rows are marked ``failed``.
        Rows that are no longer pending (labelled by an earlier, interrupted call) are left alone.
        """
        from ase.calculators.singlepoint import SinglePointCalculator

        counts = {"done": 0, "failed": 0}
        with self.db:  # all or nothing
            for k, row_id in enumerate(ids):
                row = self.db.get(id=int(row_id))
                if row.get("label_status") != "pending":
                    continue
                error = failures.get(k)
                if error is None and not _finite_label(energies[k], forces[k]):
                    error = "the labeler returned non-finite energy or forces"
                if error is not None:
                    self.db.update(row.id, label_status="failed", labeler=labeler, data={"label_error": error})
                    counts["failed"] += 1
                    continue
                atoms = row.toatoms()
                atoms.calc = SinglePointCalculator(atoms, energy=float(energies[k]), forces=np.asarray(forces[k], float))
                self.db.update(
                    row.id,
                    atoms=atoms,
                    label_status="done",
                    labeler=labeler,
                    data={"labeler_settings": settings, "label_error": ""},
                )
                counts["done"] += 1
        return counts

    def reset_failed(self) -> int:
        """Mark failed rows pending again (to retry them with other settings)."""
        ids = [row.id for row in self.db.select(label_status="failed")]
        with self.db:
            for row_id in ids:
                self.db.update(row_id, label_status="pending")
        return len(ids)

    # ------------------------------------------------------------------ reading
    def rows(self, **selection: Any) -> Iterable[Any]:
        return self.db.select(**selection)

    def labelled_ids(self, **selection: Any) -> List[int]:
        return [row.id for row in self.db.select(label_status="done", **selection)]

    def split(
        self, fractions: Tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0, **selection: Any
    ) -> Tuple[List[int], List[int], List[int]]:
        """Reproducible train/validation/test split of the labelled rows, stable as the dataset grows.

        Each row's part is fixed by its id and the seed (:func:`split_by_key`): rows added
        later never move an earlier row to another part, so a committee fine-tuned on the
        training rows of a smaller dataset is never validated or tested on them. The parts
        hold the fractions up to binomial scatter.
        """
        if len(fractions) != 3:
            raise ValueError(
                f"fractions must be three non-negative numbers (train, validation, test) summing to 1, got {fractions!r}"
            )
        ids = sorted(self.labelled_ids(**selection))
        if not ids:
            raise DatasetError("the dataset has no labelled structures to split; label some first")
        return split_by_key(ids, fractions, seed)

    def structures(self, ids: Sequence[int]) -> List[Any]:
        """``ase.Atoms`` (with a single-point calculator when labelled) for the given row ids."""
        return [self.db.get(id=int(i)).toatoms() for i in ids]

    def structure_set(self, ids: Optional[Sequence[int]] = None) -> Any:
        """Labelled rows as a :class:`~advmd.train.StructureSet` for training."""
        from advmd.train import StructureSet

        ids = self.labelled_ids() if ids is None else list(ids)
        if not ids:
            raise DatasetError("no labelled structures selected; the training set would be empty")
        numbers, positions, forces, energies, sizes = [], [], [], [], []
        for i in ids:
            row = self.db.get(id=int(i))
            if row.get("label_status") != "done":
                raise DatasetError(f"row {i} is not labelled (label_status={row.get('label_status')!r})")
            if np.any(row.pbc):
                raise DatasetError(
                    f"row {i} is periodic: training on periodic structures is not supported yet (the trainer would "
                    "treat it as a cluster and miss interactions across the box); export it with export_extxyz instead"
                )
            numbers.append(row.numbers)
            positions.append(row.positions)
            forces.append(row.forces)
            energies.append(row.energy)
            sizes.append(row.natoms)
        return StructureSet(
            np.concatenate(numbers),
            np.concatenate(positions),
            np.concatenate(forces),
            np.asarray(energies),
            np.concatenate([[0], np.cumsum(sizes)]),
        )

    # ------------------------------------------------------------------ exchange
    def export_extxyz(self, path: Union[str, os.PathLike], ids: Optional[Sequence[int]] = None) -> int:
        """Write labelled rows to extended XYZ: energy, forces and the whole provenance in each frame's info.

        Info keys: ``source``, ``generation``, ``labeler``, ``parent_id``, ``uncertainty``, ``dataset_id``
        (the row's id here), and ``labeler_settings`` and ``selection`` as percent-encoded JSON
        (``json:`` and ``urllib.parse.quote`` of the JSON text).
        :meth:`import_extxyz` reads them back.
        """
        import json

        from ase.io import write

        ids = self.labelled_ids() if ids is None else list(ids)
        frames = []
        for i in ids:
            row = self.db.get(id=int(i))
            atoms = row.toatoms()
            for key in ("source", "generation", "labeler", "parent_id", "uncertainty"):
                if key in row.key_value_pairs:
                    atoms.info[key] = row.key_value_pairs[key]
            atoms.info["dataset_id"] = int(i)
            data = row.get("data", {}) or {}
            for key in ("labeler_settings", "selection"):
                if data.get(key):
                    # Percent-encoded: extxyz's own quoting does not survive quotes, backslashes or tabs in values.
                    atoms.info[key] = _JSON_PREFIX + urllib.parse.quote(json.dumps(data[key], sort_keys=True), safe="")
            frames.append(atoms)
        write(str(path), frames, format="extxyz")
        return len(frames)

    def import_extxyz(
        self, path: Union[str, os.PathLike], provenance: Optional[Provenance] = None, labeler: str = "imported"
    ) -> List[int]:
        """Read extended XYZ frames; frames with energy and forces are stored as labelled. Returns ids in file order.

        Without ``provenance``, each frame keeps the provenance :meth:`export_extxyz` wrote (source,
        generation, uncertainty, selection; its labeler and settings), and frames without it are
        ``imported``. Row ids of the file's dataset (``dataset_id``, ``parent_id``) mean nothing here:
        they are kept in ``selection["imported_from"]`` with the file name.
        """
        import json

        from ase.io import read

        if not Path(path).is_file():
            raise DatasetError(f"extxyz file {str(path)!r} does not exist")
        frames = read(str(path), index=":", format="extxyz")

        def settings_of(frame: Any, key: str) -> Dict[str, Any]:
            text = frame.info.get(key)
            if not text:
                return {}
            if isinstance(text, str) and text.startswith(_JSON_PREFIX):
                text = urllib.parse.unquote(text[len(_JSON_PREFIX) :])
            try:
                value = json.loads(text) if isinstance(text, str) else text
            except json.JSONDecodeError as error:
                raise DatasetError(f"{str(path)!r}: the {key} of a frame is not valid JSON ({error})") from None
            return value if isinstance(value, dict) else {}

        records = []
        for frame in frames:
            labelled = frame.calc is not None and "energy" in frame.calc.results and "forces" in frame.calc.results
            if provenance is not None:
                record = provenance
            else:
                selection = settings_of(frame, "selection")
                origin = {"file": Path(path).name}
                for key in ("dataset_id", "parent_id"):
                    if key in frame.info:
                        origin[key] = int(frame.info[key])
                selection["imported_from"] = origin
                source = frame.info.get("source", "imported")
                uncertainty = frame.info.get("uncertainty")
                record = Provenance(
                    source=source if source in SOURCES else "imported",
                    generation=int(frame.info.get("generation", 0)),
                    uncertainty=None if uncertainty is None else float(uncertainty),
                    selection=selection,
                )
            name = str(frame.info.get("labeler", labeler)) if labelled else None
            settings = settings_of(frame, "labeler_settings") if labelled else None
            records.append((frame, labelled, record, name, settings))
        # One add() per run of frames that share how they are stored (labelled or not, labeler, settings).
        ids: List[int] = []
        start = 0
        while start < len(records):
            _, labelled, _, name, settings = records[start]
            stop = start + 1
            while stop < len(records) and records[stop][1:2] + records[stop][3:] == (labelled, name, settings):
                stop += 1
            run = records[start:stop]
            structures = [r[0] for r in run]
            if labelled:
                energies = [f.calc.results["energy"] for f in structures]
                forces = [f.calc.results["forces"] for f in structures]
                ids += self.add(structures, [r[2] for r in run], energies, forces, labeler=name, labeler_settings=settings)
            else:
                ids += self.add(structures, [r[2] for r in run])
            start = stop
        return ids


class _Progress:
    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.bar = None
        if enabled and total:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=description, unit="structure")
            except ImportError:
                self.bar = None
        self.total, self.done, self.description = total, 0, description

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            logger.info("%s: %d/%d", self.description, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(total: int, description: str, enabled: bool) -> _Progress:
    return _Progress(total, description, enabled)
