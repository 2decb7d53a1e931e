"""The active-learning loop (paper Algorithm 1, generalised), resumable at every stage.

Run directory::

    <directory>/
      config.json          the merged configuration of the first run (a rerun must match it)
      data.db              the provenance database (ASE): every structure, label and origin
      holdout.npz          fixed held-out set labelled once (and the CV grid, for alanine)
      summary.json         one record of metrics per generation (the learning curves)
      learning-curves.png
      gen-000/             one folder per generation
        train.ckpt         training checkpoint (exact resume inside training)
        committee.pt       exported committee (TorchScript, runs in OpenMM), Eq. 8 threshold in metadata
        metrics.json       RMSE on the held-out set and grid, coverage, labels, uncertainty, MD stability
        candidates-<k>.npz what exploration source k proposed (written atomically)
        selection.json     what was selected and added as pending rows
        map.png            committee energy and uncertainty over the CVs, with the sampled points

Generation ``g`` trains committee ``g`` on every labelled row, evaluates it, and, unless it is
the last, explores with it, selects, and labels; new rows carry ``generation = g``. Each stage
leaves a file behind, written atomically, and is skipped when that file exists. Labelling is
transactional per batch. A killed run resumes from the last finished file, and a resumed
run ends with the same dataset as an uninterrupted one: every stage is seeded from
``[run] seed`` and the generation.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Tuple

import numpy as np

from advmd._io import write_text_atomic
from advmd.loop.executor import Executor, make_executor

__all__ = ["run_loop", "LoopRunner"]

logger = logging.getLogger(__name__)
EXPLORATION_SOURCES = ("attack-dihedral", "attack-cartesian", "random", "md", "biased-md")


def _save_npz(path: Path, **arrays: Any) -> None:
    from advmd._io import durable_replace

    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    durable_replace(tmp, path)


def _label_chunk(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Label structures in a worker: returns energies, forces and per-structure failures."""
    from ase import Atoms

    from advmd.labelers import make_labeler

    labeler = make_labeler(spec["labeler"], **spec["options"])
    structures = [Atoms(numbers=spec["numbers"][k], positions=spec["positions"][k]) for k in range(len(spec["ids"]))]
    result = labeler.label(structures)
    return {
        "ids": spec["ids"],
        "energies": [None if k in result.failures else float(result.energies[k]) for k in range(len(structures))],
        "forces": [None if k in result.failures else np.asarray(result.forces[k]) for k in range(len(structures))],
        "failures": dict(result.failures),
        # What the labels were computed with (method, basis, charge, versions), not the configuration's shorthand.
        "labeler": labeler.name,
        "settings": labeler.settings(),
    }


class LoopRunner:
    """Runs (or resumes) the loop a configuration describes (see :func:`advmd.loop.config.load_loop_config`)."""

    def __init__(
        self, config: Dict[str, Any], executor: Optional[Executor] = None, progress: bool = True, stream: Optional[TextIO] = None
    ) -> None:
        self.config = config
        self.stream = stream if stream is not None else sys.stdout
        self.directory = Path(config["run"]["directory"])
        self.progress = progress
        self._executor = executor
        self._own_executor = executor is None
        self.system = config["system"]["name"]

    # ------------------------------------------------------------------ helpers
    @property
    def executor(self) -> Executor:
        if self._executor is None:
            e = self.config["executor"]
            self._executor = make_executor(e["workers"], e["scheduler"] or None, e["threads"])
        return self._executor

    def _log(self, text: str) -> None:
        logger.info(text)
        if self.progress:
            self.stream.write(f"[advmd loop] {text}\n")
            self.stream.flush()

    def _gen_dir(self, g: int) -> Path:
        path = self.directory / f"gen-{g:03d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def dataset(self):
        from advmd.data import Dataset

        return Dataset(self.directory / "data.db")

    # ------------------------------------------------------------------ stages
    def _check_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "config.json"
        record = {k: v for k, v in self.config.items() if k != "executor"}
        record["run"] = {k: v for k, v in record["run"].items() if k not in ("directory", "generations")}
        text = json.dumps(record, indent=1, sort_keys=True)
        # A directory whose set-up stored nothing yet (it failed first) takes a corrected configuration.
        started = (self.directory / "data.db").is_file() and len(self.dataset) > 0
        if path.is_file() and started:
            if json.loads(path.read_text()) != json.loads(text):
                raise ValueError(
                    f"the run directory {str(self.directory)!r} was started with another configuration (see its config.json); "
                    "use a new [run] directory, or restore the old settings (only generations and the executor may change)"
                )
        else:
            write_text_atomic(path, text)

    def _initialise(self) -> None:
        """Initial structures (pending), their labels, and the held-out set."""
        from advmd.data import Provenance
        from advmd.data.initial import initial_structures

        dataset = self.dataset
        seed = int(self.config["run"]["seed"])
        system = self.config["system"]
        if len(dataset) == 0:  # one transaction: either all initial rows exist or none
            options = {"interval_ps": system["interval_ps"]} if self.system == "alanine" else {}
            if self.system == "ammonia":
                options["labeler"] = self.config["labeler"]["name"]
                options["labeler_options"] = dict(self.config["labeler"]["options"])
            structures, settings = initial_structures(self.system, system["initial"], seed, **options)
            dataset.add(structures, Provenance("initial", generation=0, selection=settings))
            self._log(f"initial data: {len(structures)} {self.system} structures")
        self._label()
        if not (self.directory / "holdout.npz").is_file():
            from advmd.loop.metrics import make_holdout

            holdout = make_holdout(self.system, system, self.config["labeler"], seed)
            _save_npz(self.directory / "holdout.npz", **holdout)
            self._log(
                f"held-out set: {len(holdout['energies'])} structures" + (", CV grid" if "grid_energies" in holdout else "")
            )

    def _label(self) -> None:
        dataset = self.dataset
        pending = dataset.pending_ids()
        if not pending:
            return
        labeler = self.config["labeler"]
        start = time.perf_counter()
        chunk = max(1, int(np.ceil(len(pending) / max(1, 4 * self._parallelism()))))
        chunk = min(chunk, 64)
        specs = []
        for i in range(0, len(pending), chunk):
            ids = pending[i : i + chunk]
            rows = [dataset.db.get(id=k) for k in ids]
            specs.append(
                {
                    "ids": ids,
                    "numbers": [r.numbers for r in rows],
                    "positions": [r.positions for r in rows],
                    "labeler": labeler["name"],
                    "options": dict(labeler["options"]),
                }
            )
        done = failed = 0
        # Each chunk is stored as soon as it is labelled: a crash loses only the chunks still running.
        for _, result in self.executor.as_completed(_label_chunk, specs):
            counts = dataset.store_labels(
                result["ids"], result["energies"], result["forces"], result["failures"], result["labeler"], result["settings"]
            )
            done += counts["done"]
            failed += counts["failed"]
        self._log(f"labelled {done} structures ({failed} failed) with {labeler['name']} in {time.perf_counter() - start:.1f} s")

    def _parallelism(self) -> int:
        e = self.config["executor"]
        return 4 if e["scheduler"] else int(e["workers"])

    def _train(self, g: int) -> Path:
        """Committee ``g`` on every labelled row (fine-tuned from ``g-1`` when configured)."""
        import torch

        from advmd.committee import (
            CommitteePotential,
            CoordinateMLPCommittee,
            SchNetCommittee,
            export_committee,
            load_trainable_committee,
            make_bias,
        )
        from advmd.data.store import split_by_key
        from advmd.loop.config import SYSTEM_DEFAULTS
        from advmd.train import TrainingConfig, align_reference_energies, calibrate_threshold, predict, train_committee

        folder = self._gen_dir(g)
        out = folder / "committee.pt"
        if out.is_file():
            return out
        model, training = self.config["model"], self.config["training"]
        seed = int(self.config["run"]["seed"]) * 1000 + g
        dataset = self.dataset
        rows = [(r.id, r.energy) for r in dataset.rows(label_status="done")]
        if not rows:
            raise ValueError(
                f"generation {g}: no labelled structures to train on ({dataset.count(label_status='failed')} labels "
                f"failed; their errors are in {dataset.path}). Fix the labeler settings, relabel the failed rows with "
                f"'advmd label --db {dataset.path} --labeler ... --retry-failed', and run the loop again"
            )
        cap = float(training["energy_cap"])
        lowest = min(e for _, e in rows)
        ids = [i for i, e in rows if cap <= 0 or e <= lowest + cap]  # labelled extremes stay in the database, untrained
        data = dataset.structure_set(ids)
        # Validation rows fixed per row for the whole run (the run seed and the row id), not drawn again each
        # generation: a committee fine-tuned from generation g - 1 is never validated on rows it was trained on.
        fraction = TrainingConfig().validation_fraction
        train_ids, validation_ids = split_by_key(ids, (1.0 - fraction, fraction), int(self.config["run"]["seed"]))
        if len(train_ids) < 2 or not validation_ids:
            raise ValueError(
                f"generation {g}: {len(ids)} labelled structures are too few to train and validate on; raise [system] "
                "initial, in a new [run] directory (this one holds the structures of the current settings)"
            )
        species = sorted({int(z) for z in data.numbers})
        fine_tune = (bool(training["fine_tune"]) and g > 0) or (g == 0 and bool(model["start_from"]))
        if fine_tune:
            previous = self.directory / f"gen-{g - 1:03d}" / "committee.pt" if g > 0 else model["start_from"]
            committee, _ = load_trainable_committee(previous)
            missing = sorted(set(species) - set(committee.species))
            if missing:
                raise ValueError(f"[model] start_from {str(previous)!r} lacks species Z={missing} present in the data")
            if g == 0:  # start_from may come from another reference method: move it onto these labels' energy zero
                offsets = align_reference_energies(committee, dataset.structure_set(train_ids))
                logger.info("generation 0: start_from's reference energies moved by %s eV per species", np.round(offsets, 3))
        elif model["kind"] == "mlp":
            sizes = set(np.diff(data.offsets).tolist())
            if len(sizes) != 1:
                raise ValueError("[model] kind 'mlp' needs structures of one size; the dataset mixes sizes")
            committee = CoordinateMLPCommittee(
                sizes.pop(),
                species,
                n_members=model["members"],
                hidden=model["hidden"],
                dimensions=SYSTEM_DEFAULTS[self.system]["dimensions"],
                seed=seed,
            )
        else:
            committee = SchNetCommittee(
                species,
                n_members=model["members"],
                n_features=model["features"],
                n_rbf=model["rbf"],
                n_interactions=model["interactions"],
                cutoff=model["cutoff"],
                seed=seed,
            )
        torch.manual_seed(seed)
        config = TrainingConfig(
            epochs=int(training["fine_tune_epochs"] if fine_tune else training["epochs"]),
            batch_size=int(training["batch_size"]),
            learning_rate=float(training["fine_tune_learning_rate"] if fine_tune else training["learning_rate"]),
            seed=seed,
            fine_tune=fine_tune,
        )
        start = time.perf_counter()
        train_data = dataset.structure_set(train_ids)
        result = train_committee(
            committee,
            train_data,
            config,
            validation=dataset.structure_set(validation_ids),
            checkpoint=folder / "train.ckpt",
        )
        # Eq. 8 threshold and UDD width from the training rows, as 'advmd train' does (not the validation rows).
        threshold = calibrate_threshold(committee, train_data, float(training["threshold_percentile"]))
        member_e, _ = predict(committee, train_data)
        sigma_e2 = np.var(member_e, axis=0, ddof=1)
        n_atoms = float(np.mean(np.diff(train_data.offsets)))
        m = committee.n_members
        # UDD width: half depth at the 99th percentile of the training energy spread (as for the demo committee).
        width = float(np.sqrt(max((m - 1) * np.percentile(sigma_e2, 99), 1e-12) / (m * n_atoms * np.log(2.0))))
        potential = CommitteePotential(committee, make_bias("udd", m, width=width))
        export_committee(
            potential,
            out,
            default_strength=0.0,
            extra_metadata={
                "uncertainty_threshold": threshold,
                "training_ids": [int(i) for i in train_ids],  # Q of Eq. 11-12 for this committee's attacks
                "loop": {
                    "generation": g,
                    "fine_tuned": fine_tune,
                    "learning_rate": config.learning_rate,
                    "training": {k: v for k, v in result.as_dict().items() if k != "history"},
                },
            },
        )
        (folder / "train.ckpt").unlink(missing_ok=True)
        self._log(
            f"generation {g}: trained on {len(train_ids)} structures (validation {len(validation_ids)}) "
            f"in {time.perf_counter() - start:.1f} s"
            f"{' (fine-tuned)' if fine_tune else ''}; Eq. 8 threshold {threshold['sigma_f2']:.4g} (eV/A)^2"
        )
        return out

    def _explore(self, g: int, model_path: Path) -> List[Dict[str, Any]]:
        from advmd.attacks.job import seed_pool, training_energies
        from advmd.committee import read_metadata
        from advmd.loop.sources import explore_job, md_walker_job

        folder = self._gen_dir(g)
        seed = int(self.config["run"]["seed"]) * 1000 + g
        ids, numbers, pool, energies = seed_pool(self.dataset)
        partition = training_energies(ids, energies, read_metadata(model_path).get("training_ids"))
        threads = int(self.config["executor"]["threads"])
        missing = [k for k in range(len(self.config["sources"])) if not (folder / f"candidates-{k}.npz").is_file()]
        for leftover in folder.glob("walker-*.npz"):  # of sources whose candidates a crash left written
            if int(leftover.stem.split("-")[1]) not in missing:
                leftover.unlink()
        explore_specs, md_specs = [], []
        md_walkers: List[Tuple[int, int]] = []  # (source, walker) of each md_specs entry
        for k in missing:
            source = self.config["sources"][k]
            if source["kind"] in ("md", "biased-md"):
                rng = np.random.default_rng([seed, k])
                for w in range(int(source["walkers"])):
                    start = int(rng.integers(len(ids)))
                    md_walkers.append((k, w))
                    md_specs.append(
                        (
                            k,
                            {
                                "model": str(model_path),
                                "numbers": numbers,
                                "start": pool[start],
                                "parent_id": ids[start],
                                "temperature": source["temperature"],
                                "timestep_fs": source["timestep_fs"],
                                "frames": source["frames"],
                                "interval": source["interval"],
                                "bias_strength": source.get("bias_strength", 0.0) if source["kind"] == "biased-md" else 0.0,
                                "seed": seed * 100 + 10 * k + w,
                                "threads": threads,
                                "topology": None,  # alanine: the shipped PDB; others: covalent radii
                            },
                        )
                    )
            else:
                explore_specs.append(
                    (
                        k,
                        {
                            "model": str(model_path),
                            "source": source,
                            "numbers": numbers,
                            "pool": pool,
                            "pool_ids": ids,
                            "pool_energies": energies,
                            "partition_energies": partition,
                            "seed": seed * 100 + k,
                            "threads": threads,
                            "topology": None,  # alanine: the shipped PDB; others: covalent radii
                        },
                    )
                )
        if explore_specs or md_specs:
            start = time.perf_counter()
            # Every finished job is on disk at once (a source's candidates, or one MD walker's frames): a
            # crash loses only the jobs still running, and a resume runs only what is missing.
            for index, result in self.executor.as_completed(explore_job, [spec for _, spec in explore_specs]):
                _save_npz(folder / f"candidates-{explore_specs[index][0]}.npz", **result)
            walker_files = [folder / f"walker-{k}-{w}.npz" for k, w in md_walkers]
            todo = [i for i, path in enumerate(walker_files) if not path.is_file()]
            for index, result in self.executor.as_completed(md_walker_job, [md_specs[i][1] for i in todo]):
                _save_npz(walker_files[todo[index]], **result)
            walkers = []
            for path in walker_files:
                with np.load(path) as f:
                    walkers.append({name: f[name] for name in f.files})
            self._save_md_candidates(folder, model_path, numbers, md_specs, walkers)
            for path in walker_files:
                path.unlink()
            self._log(f"generation {g}: explored {len(missing)} sources in {time.perf_counter() - start:.1f} s")
        out = []
        for k in range(len(self.config["sources"])):
            with np.load(folder / f"candidates-{k}.npz") as f:
                out.append({name: f[name] for name in f.files})
        return out

    def _save_md_candidates(self, folder: Path, model_path: Path, numbers, md_specs, walkers) -> None:
        from advmd.attacks import committee_statistics
        from advmd.committee import load_trainable_committee

        by_source: Dict[int, List[Any]] = {}
        for (k, _), walker in zip(md_specs, walkers):
            by_source.setdefault(k, []).append(walker)
        if not by_source:
            return
        committee, _ = load_trainable_committee(model_path)
        for k, runs in by_source.items():
            frames = [r["frames"] for r in runs if len(r["frames"])]
            positions = np.concatenate(frames) if frames else np.zeros((0, len(numbers), 3))
            parents = np.concatenate([np.full(len(r["frames"]), r["parent_id"]) for r in runs]) if frames else np.zeros(0, int)
            energy, sigma = committee_statistics(committee, numbers, positions)
            _save_npz(
                folder / f"candidates-{k}.npz",
                source=np.array("md"),
                positions=positions,
                mean_energy=energy,
                sigma_f2=sigma,
                initial_sigma_f2=np.full(len(positions), np.nan),
                parent_ids=parents,
                walker_stable=np.array([r["stable"] for r in runs]),
                walker_time_ps=np.array([r["time_ps"] for r in runs]),
            )

    def _select(self, g: int, model_path: Path, candidates: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Joint selection over all sources; the chosen structures become pending rows (one transaction)."""
        from advmd.attacks import SelectionConfig, select
        from advmd.attacks.job import Candidates, candidate_rows, seed_pool
        from advmd.committee import read_metadata

        folder = self._gen_dir(g)
        path = folder / "selection.json"
        if path.is_file():
            return json.loads(path.read_text())
        dataset = self.dataset
        written = [r.id for r in dataset.rows(generation=g) if r.get("source") in EXPLORATION_SOURCES]
        pool_ids, numbers, pool, energies = seed_pool(dataset)
        if written:
            # A crash after the rows' transaction, before selection.json (and a resume may have labelled them
            # since): select against the dataset as it was, without them, so that the record is the same.
            keep = ~np.isin(pool_ids, written)
            pool, energies = pool[keep], energies[keep]
        # Structures whose labelling failed stay in the dataset, unlabelled: near-duplicates of them would fail
        # again, so they count as known to the deduplication (not to the energy cap, which needs energies).
        failed = [
            r.positions for r in dataset.rows(label_status="failed") if tuple(r.numbers) == tuple(numbers) and r.id not in written
        ]
        reference = np.concatenate([pool, np.array(failed)]) if failed else pool
        threshold = read_metadata(model_path)["uncertainty_threshold"]["sigma_f2"]
        sel = self.config["selection"]
        cap = float(sel["energy_cap"])
        energy_max = float(np.min(energies)) + cap if cap > 0 else None
        merged = {
            key: np.concatenate([c[key] for c in candidates])
            for key in ("positions", "mean_energy", "sigma_f2", "initial_sigma_f2", "parent_ids")
        }
        origin = np.concatenate([np.full(len(c["sigma_f2"]), k) for k, c in enumerate(candidates)])
        config = SelectionConfig(
            threshold=threshold,
            energy_max=energy_max,
            rmsd=float(sel["rmsd"]),
            max_count=int(sel["budget"]),
            align=self.config["model"]["kind"] != "mlp",  # absolute-coordinate models: no superposition
        )
        chosen = select(merged["positions"], numbers, merged["sigma_f2"], merged["mean_energy"], config, reference=reference)
        if not written:  # a crash after the transaction but before selection.json: the rows are there already
            structures, provenance = [], []
            for k, source in enumerate(self.config["sources"]):
                indices = [int(i) for i in chosen.indices if origin[i] == k]
                name = "md" if source["kind"] in ("md", "biased-md") else str(candidates[k]["source"])
                settings = {"loop_source": dict(source), "threshold": threshold, "energy_max": energy_max}
                rows = candidate_rows(Candidates(source=name, numbers=numbers, **merged), indices, g, settings)
                structures += rows[0]
                provenance += rows[1]
            written = dataset.add(structures, provenance) if structures else []  # one transaction for all sources
        per_source = {str(k): int(np.sum(origin[chosen.indices] == k)) for k in range(len(candidates))}
        record = {
            "generation": g,
            "threshold": threshold,
            "energy_max": energy_max,
            "counts": chosen.counts,
            "per_source": per_source,
            "ids": sorted(int(i) for i in written),
            "selected_sigma_f2": [float(merged["sigma_f2"][i]) for i in chosen.indices],
            "candidates_sigma_f2_median": float(np.nanmedian(merged["sigma_f2"])) if len(merged["sigma_f2"]) else None,
            "candidates_sigma_f2_max": float(np.nanmax(merged["sigma_f2"])) if len(merged["sigma_f2"]) else None,
        }
        write_text_atomic(path, json.dumps(record, indent=1))
        self._log(
            f"generation {g}: selected {chosen.counts['selected']} of {chosen.counts['candidates']} candidates {chosen.counts}"
        )
        return record

    # ------------------------------------------------------------------ driver
    def run(self) -> Dict[str, Any]:
        from advmd.loop.metrics import generation_metrics, plot_learning_curves

        started = time.perf_counter()
        self._check_config()
        try:
            self._initialise()
            generations = int(self.config["run"]["generations"])
            summary: List[Dict[str, Any]] = []
            for g in range(generations + 1):
                model_path = self._train(g)
                selection = None
                candidates: List[Dict[str, Any]] = []
                if g < generations:
                    candidates = self._explore(g, model_path)
                    selection = self._select(g, model_path, candidates)
                    self._label()
                metrics = generation_metrics(self, g, model_path, candidates, selection)
                summary.append(metrics)
                self._log(
                    f"generation {g}: held-out RMSE E {metrics['holdout']['mean_energy_rmse']:.4f} eV, "
                    f"F {metrics['holdout']['mean_force_rmse']:.4f} eV/A; labels {metrics['labels']['total']}"
                    + (f"; coverage {metrics['coverage']:.2f}" if metrics.get("coverage") is not None else "")
                )
            write_text_atomic(self.directory / "summary.json", json.dumps(summary, indent=1))
            plot_learning_curves(summary, self.directory / "learning-curves.png")
        finally:
            if self._own_executor and self._executor is not None:
                self._executor.close()
        self._log(f"done in {time.perf_counter() - started:.1f} s; results in {self.directory}")
        return {"generations": summary, "directory": str(self.directory)}


def run_loop(
    config: Dict[str, Any], executor: Optional[Executor] = None, progress: bool = True, stream: Optional[TextIO] = None
) -> Dict[str, Any]:
    """Run or resume the loop of ``config`` (from :func:`~advmd.loop.config.load_loop_config`).

    Progress lines go to ``stream`` (default stdout) unless ``progress`` is false.
    """
    return LoopRunner(config, executor, progress, stream).run()
