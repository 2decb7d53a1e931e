"""Command-line interface: ``advmd <verb>``.

Verbs
-----
demo
    Alanine dipeptide in vacuum driven by the shipped committee inside OpenMM,
    with the UDD uncertainty bias switched on half-way through the run through
    ``context.setParameter`` (no rebuild). Prints energy, temperature and the
    committee uncertainty at every report.
info
    Print the metadata of an exported committee file (the model is not run).
data init | import | export
    Create a dataset with the initial structures of a paper system (alanine,
    ammonia, double-well) as pending rows; exchange with extended XYZ.
label
    Label the pending rows of a dataset with a reference method (resumable).
train
    Train, evaluate, calibrate and export a committee from a TOML config.
export
    Re-export a committee with another bias form, width or default strength (no retraining).
md
    Monitored, checkpointed committee MD from a TOML config; rerun the command to resume.
attack
    Adversarial (or random-displacement) exploration from a dataset's labelled rows:
    attack, select (Eq. 8 threshold, energy cap, RMSD dedup, budget), add as pending rows.
loop
    The active-learning loop from a TOML config (defaults: alanine dipeptide, amber14 labels,
    dihedral attacks); rerun the same command to resume.
stability
    The paper's MD stability test: many short runs in parallel, stable fraction, failure times.
diagnose adversarial | conservative
    Model diagnostics: adversarial directions of a model against reference labels (seed 000);
    Jacobian asymmetry and NVE drift (seed 004).
bench
    The performance suite: times and ratios against the targets, peak memory.
example-config
    Print a commented example config (train, md or loop).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from typing import List, Optional, TextIO

__all__ = ["main"]


def _write(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    import openmm
    from openmm import app, unit

    from advmd.committee import read_metadata
    from advmd.openmm import create_system, parameter_names, read_uncertainty
    from advmd.openmm.platforms import choose_platform
    from advmd.systems import alanine_dipeptide, resource_path

    if args.steps < 1 or args.report_interval < 1:
        raise SystemExit(f"advmd demo: --steps ({args.steps}) and --report-interval ({args.report_interval}) must be >= 1")
    if not (math.isfinite(args.bias_strength) and args.bias_strength >= 0):
        raise SystemExit(f"advmd demo: --bias-strength must be a finite number >= 0 kJ/mol, got {args.bias_strength}")
    model = args.model or str(resource_path("alanine-dipeptide-committee.pt"))
    metadata = read_metadata(model)
    topology, positions = alanine_dipeptide()
    system = create_system(topology, model, backend=args.backend, bias_strength=0.0)
    integrator = openmm.LangevinMiddleIntegrator(
        args.temperature * unit.kelvin, 1.0 / unit.picosecond, args.timestep * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(args.seed + 1)
    try:
        platform = choose_platform(system, args.platform)
    except ValueError as error:
        raise SystemExit(f"advmd demo: --platform: {error}") from None
    simulation = app.Simulation(topology, system, integrator, platform)
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed + 1)
    strength_name = parameter_names()["bias_strength"]
    dof = 3 * system.getNumParticles() - 3  # CMMotionRemover removes 3
    k_b = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)

    _write(
        out,
        f"advmd demo: alanine dipeptide, committee of {metadata['n_members']} ({metadata['architecture']['class']}), "
        f"bias {metadata['bias']['form']}, backend {args.backend}, platform {platform.getName()}",
    )
    _write(
        out,
        f"  {args.steps} steps of {args.timestep} fs at {args.temperature} K; bias strength 0 until step {args.steps // 2}, "
        f"then {args.bias_strength} kJ/mol (set with context.setParameter('{strength_name}', ...))",
    )
    header = (
        f"{'step':>7} {'time/ps':>8} {'E_pot/kJmol':>12} {'T/K':>7} {'sigE/kJmol':>10} {'sigF/kJmol/nm':>13} "
        f"{'maxdev':>8} {'atom':>4} {'bias/kJmol':>10} {'ns/day':>7}"
    )
    _write(out, header)
    start = time.perf_counter()
    done = 0
    while done < args.steps:
        chunk = min(args.report_interval, args.steps - done)
        if done < args.steps // 2 <= done + chunk and args.bias_strength > 0:
            first = args.steps // 2 - done
            if first:
                simulation.step(first)
            simulation.context.setParameter(strength_name, args.bias_strength)
            if chunk - first:
                simulation.step(chunk - first)
        else:
            simulation.step(chunk)
        done += chunk
        state = simulation.context.getState(energy=True, parameterDerivatives=args.backend == "torch")
        u = read_uncertainty(simulation.context, state=state if args.backend == "torch" else None)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2.0 * state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (dof * k_b)
        elapsed = time.perf_counter() - start
        ns_per_day = done * args.timestep * 1e-6 / elapsed * 86400.0 if elapsed > 0 else float("nan")
        _write(
            out,
            f"{done:>7d} {done * args.timestep / 1000:>8.3f} {energy:>12.2f} {temperature:>7.1f} {u.sigma_energy:>10.3f} "
            f"{u.sigma_force:>13.2f} {u.max_force_deviation:>8.2f} {u.max_deviation_atom:>4d} {u.bias_energy:>10.3f} "
            f"{ns_per_day:>7.2f}",
        )
        if not math.isfinite(energy):
            _write(out, "advmd demo: energy is not finite; stopping")
            return 1
    return 0


def _info(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.committee import read_metadata

    _write(out, json.dumps(read_metadata(args.model), indent=2, sort_keys=True))
    return 0


def _parse_options(pairs: List[str]) -> dict:
    """``key=value`` strings -> dict, values parsed as JSON when possible (numbers, booleans)."""
    options = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"advmd: --option expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _data(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.data import Dataset, Provenance

    if args.action == "export":
        n = Dataset(args.db, create=False).export_extxyz(args.file)
        _write(out, f"wrote {n} labelled structures to {args.file}")
        return 0
    if args.action == "import":
        ids = Dataset(args.db).import_extxyz(args.file)
        _write(out, f"imported {len(ids)} structures into {args.db}")
        return 0
    from advmd.data import initial

    if args.n < 1:
        raise SystemExit(f"advmd data init: --n must be >= 1, got {args.n}")
    options = {"interval_ps": args.interval_ps} if args.system == "alanine" else {}
    if args.system == "ammonia":
        options["labeler"] = args.labeler
    structures, settings = initial.initial_structures(args.system, args.n, args.seed, **options)
    ids = Dataset(args.db).add(structures, Provenance("initial", generation=0, selection=settings))
    _write(out, f"added {len(ids)} pending {args.system} structures to {args.db}; label them with 'advmd label'")
    return 0


def _label(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.data import Dataset
    from advmd.labelers import make_labeler

    dataset = Dataset(args.db, create=False)
    labeler = make_labeler(args.labeler, **_parse_options(args.option))
    if args.retry_failed:
        _write(out, f"{dataset.reset_failed()} failed structures marked pending again")
    start = time.perf_counter()
    counts = dataset.label_pending(labeler, batch_size=args.batch_size, progress=not args.quiet)
    seconds = time.perf_counter() - start
    rate = (counts["done"] + counts["failed"]) / seconds if seconds > 0 else float("nan")
    _write(
        out,
        f"labelled {counts['done']} structures ({counts['failed']} failed) with {labeler.name} in {seconds:.1f} s ({rate:.2f}/s)",
    )
    return 0


def _train(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.train.job import load_config, run_training

    config = load_config(args.config)
    metrics = run_training(config)
    test = metrics["test"]
    _write(
        out,
        f"wrote {config['output']['model']}: test committee-mean RMSE E {test['mean_energy_rmse']:.4f} eV, "
        f"F {test['mean_force_rmse']:.4f} eV/A; Eq. 8 threshold sigma_F^2 = {metrics['uncertainty_threshold']['sigma_f2']:.4g} "
        f"(eV/A)^2; {metrics['training']['structures_per_second']:.1f} structures/s",
    )
    return 0


def _molecule(pdb_path: Optional[str]):
    """Topology and positions (Angstrom, ndarray) from a PDB file, or the shipped alanine dipeptide."""
    import numpy as np
    from openmm import app, unit

    from advmd.systems import alanine_dipeptide

    if pdb_path:
        pdb = app.PDBFile(pdb_path)
        topology, positions = pdb.topology, pdb.positions
    else:
        topology, positions = alanine_dipeptide()
    return topology, np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0


def _stability(args: argparse.Namespace, out: TextIO) -> int:

    from advmd.md.stability_test import stability_test
    from advmd.systems import resource_path

    topology, positions = _molecule(args.pdb)
    numbers = [a.element.atomic_number for a in topology.atoms()]
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    criteria = {"bond_tolerance": args.bond_tolerance, "min_distance": args.min_distance}
    if args.hh_range:
        criteria["distance_ranges"] = [[1, 1, args.hh_range[0], args.hh_range[1]]]
    if args.energy_floor is not None:
        criteria["energy_floor"] = args.energy_floor
    result = stability_test(
        args.model or str(resource_path("alanine-dipeptide-committee.pt")),
        numbers,
        positions,
        bonds,
        n_runs=args.runs,
        duration_ps=args.ps,
        temperature_range_k=(args.tmin, args.tmax),
        timestep_fs=args.timestep,
        criteria=criteria,
        processes=args.processes,
        seed=args.seed,
        engine=args.engine,
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result.as_dict(), handle, indent=1)
    quantiles = result.failure_time_quantiles()
    times = ", ".join(f"{k} {v:.3f} ps" for k, v in quantiles.items()) or "no failures"
    _write(out, f"stable {sum(result.stable)}/{len(result.stable)} ({result.stable_fraction:.0%}); time to failure: {times}")
    return 0


def _export(args: argparse.Namespace, out: TextIO) -> int:
    import torch

    from advmd.committee import CommitteePotential, SchNetCommittee, export_committee, load_committee, make_bias, read_metadata
    from advmd.committee.export import exact_state_dict

    module, metadata = load_committee(args.model)
    if metadata["architecture"]["class"] != "SchNetCommittee":
        raise SystemExit(
            f"advmd export: re-exporting needs a SchNetCommittee model, {args.model} holds {metadata['architecture']['class']}"
        )
    committee = SchNetCommittee(**metadata["architecture"]["hyperparameters"]).to(getattr(torch, metadata["dtype"]))
    committee.load_state_dict(exact_state_dict(module.committee))
    form = args.bias or metadata["bias"]["form"]
    parameters = {}
    if form == "udd":
        parameters["width"] = args.width if args.width is not None else metadata["bias"]["parameters"].get("width", 0.05)
    if form == "hal" and metadata["bias"]["form"] == "hal" and "epsilon" in metadata["bias"]["parameters"]:
        parameters["epsilon"] = metadata["bias"]["parameters"]["epsilon"]  # the input's, not the default
    strength = args.default_strength if args.default_strength is not None else metadata["bias"]["default_strength"]
    kept = ("uncertainty_threshold", "training_metrics", "training_ids", "loop", "demo")
    keep = {k: v for k, v in metadata.items() if k in kept}
    potential = CommitteePotential(committee, make_bias(form, committee.n_members, **parameters))
    tabulate = args.tabulate
    if tabulate is None and not args.exact:
        tabulate = metadata.get("tabulated", {}).get("spacing_angstrom")  # keep the input's form
    path = export_committee(potential, args.out, default_strength=strength, extra_metadata=keep, tabulate=tabulate)
    written = read_metadata(path)
    tables = ""
    if "tabulated" in written:
        tables = f", filters tabulated every {written['tabulated']['spacing_angstrom']:.4g} A"
    _write(out, f"wrote {args.out}: bias {form} {parameters or ''} default strength {strength}{tables}")
    return 0


def _example_config(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.systems import resource_path

    out.write(resource_path(f"{args.kind}.example.toml").read_text())
    return 0


def _md(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.md.runner import load_md_config, run_md

    config = load_md_config(args.config)
    result = run_md(config, progress=not args.quiet)
    where = config["run"]["output"]
    if result.status == "unstable":
        _write(out, f"advmd md: run stopped as unstable at step {result.failure_step}: {'; '.join(result.reasons)} (see {where})")
        return 3
    if result.seconds == 0.0 and result.resumed_from is None and result.status == "completed":
        _write(out, f"advmd md: the run in {where} had already completed {result.steps} steps; nothing to do")
        return 0
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""
    _write(out, f"advmd md: {result.status} {result.steps} steps{resumed}; {result.ns_per_day:.2f} ns/day; output in {where}")
    return 0


def _attack(args: argparse.Namespace, out: TextIO) -> int:
    from pathlib import Path

    from advmd.attacks import AttackConfig, SelectionConfig
    from advmd.attacks.job import ExplorationConfig, explore_dataset, parse_dihedrals
    from advmd.committee import load_inference_committee
    from advmd.data import Dataset

    if not Path(args.db).is_file() and not str(args.db).startswith(("postgresql://", "postgres://")):
        raise SystemExit(f"advmd attack: --db {args.db!r} does not exist; create and label a dataset first")
    committee, metadata = load_inference_committee(args.model)  # a tabulated file attacks with its tables
    threshold = args.threshold
    if threshold is None:
        threshold = (metadata.get("uncertainty_threshold") or {}).get("sigma_f2")
        if threshold is None:
            raise SystemExit(
                f"advmd attack: {args.model} has no calibrated uncertainty threshold; pass --threshold (eV/A)^2 "
                "or export the model with 'advmd train'"
            )
    config = ExplorationConfig(
        method=args.method,
        space=args.space,
        dihedrals=parse_dihedrals(args.dihedrals),
        n_seeds=args.n_seeds,
        attack=AttackConfig(
            steps=args.steps,
            learning_rate=args.learning_rate,
            init_std=args.init_std,
            kt=args.kt,
            max_norm=args.max_norm,
            seed=args.seed,
        ),
        amplitude=args.amplitude,
        selection=SelectionConfig(rmsd=args.rmsd, max_count=args.max_new),
        energy_cap=None if args.energy_cap <= 0 else args.energy_cap,
        seed=args.seed,
    )
    try:
        config.validate()
    except ValueError as error:
        raise SystemExit(f"advmd attack: {error}") from None
    start = time.perf_counter()
    summary = explore_dataset(
        committee,
        Dataset(args.db),
        config,
        threshold,
        args.generation,
        args.topology,
        dry_run=args.dry_run,
        training_ids=metadata.get("training_ids"),
    )
    counts = summary["counts"]
    sigma = summary["sigma_f2"]

    def number(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    frozen = f"; {sigma['non_finite_seeds']} seeds turned non-finite and were dropped" if sigma["non_finite_seeds"] else ""
    _write(
        out,
        f"advmd attack: {config.source}, {config.n_seeds} seeds in {time.perf_counter() - start:.1f} s; median sigma_F^2 "
        f"{number(sigma['initial_median'])} -> {number(sigma['final_median'])} (eV/A)^2, threshold {threshold:.4g}{frozen}",
    )
    _write(out, "selection: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    action = "would add" if args.dry_run else "added"
    _write(
        out, f"{action} {counts['selected']} pending rows to {args.db}" + (f" (ids {summary['ids']})" if summary["ids"] else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


def _loop(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.loop import load_loop_config, run_loop
    from advmd.loop.config import validate_loop_config

    config = load_loop_config(args.config)
    if args.directory:
        config["run"]["directory"] = args.directory
    if args.generations is not None:
        config["run"]["generations"] = args.generations
        validate_loop_config(config)  # the command line's value, checked before any work
    result = run_loop(config, progress=not args.quiet, stream=out)
    last = result["generations"][-1]
    _write(
        out,
        f"advmd loop: {len(result['generations']) - 1} generations; final held-out RMSE "
        f"E {last['holdout']['mean_energy_rmse']:.4f} eV, F {last['holdout']['mean_force_rmse']:.4f} eV/A; "
        f"{last['labels']['total']} labels; results in {result['directory']}",
    )
    return 0


def _bench(args: argparse.Namespace, out: TextIO) -> int:
    from advmd.bench import format_rows, rows_to_json, run_benchmarks

    try:
        sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(
            f"advmd bench: --sizes must be comma-separated atom counts such as 22,648,3000, got {args.sizes!r}"
        ) from None
    from advmd.openmm.platforms import check_platform_name

    try:
        check_platform_name(args.platform)
    except ValueError as error:
        raise SystemExit(f"advmd bench: --platform: {error}") from None
    bad = [n for n in sizes if n != 22 and (n % 3 or n < 24)]
    if bad or not sizes:
        raise SystemExit(
            f"advmd bench: --sizes takes 22 (alanine dipeptide) or multiples of 3 from 24 on (water boxes), got {bad or sizes}"
        )
    counts = (("--repeats", args.repeats), ("--attack-seeds", args.attack_seeds), ("--attack-steps", args.attack_steps))
    for flag, value in counts:
        if value < 1:
            raise SystemExit(f"advmd bench: {flag} must be >= 1, got {value}")
    rows = run_benchmarks(
        sizes=sizes,
        repeats=args.repeats,
        platform=args.platform,
        attack_seeds=args.attack_seeds,
        attack_steps=args.attack_steps,
        memory=not args.no_memory,
        progress=sys.stderr,
    )
    _write(out, format_rows(rows, args.platform))
    if args.json:
        from advmd._io import write_text_atomic

        write_text_atomic(args.json, rows_to_json(rows))
    return 0


def _diagnose(args: argparse.Namespace, out: TextIO) -> int:
    import numpy as np

    from advmd.systems import resource_path

    model = args.model or str(resource_path("alanine-dipeptide-committee.pt"))
    if args.action == "adversarial":
        from advmd.diagnostics import diagnose_adversarial

        summary = diagnose_adversarial(
            args.db,
            model,
            args.out,
            reference=args.reference,
            max_structures=args.max_structures or None,
            relax_structures=args.relax_structures,
            relax_steps=args.relax_steps,
            step_size=args.step_size,
            max_displacement=args.max_step,
            align=args.align,
            seed=args.seed,
        )
        adv = summary["adversarial"]
        _write(
            out,
            f"{summary['approximate']} approximating {summary['reference']}: {adv['structures']} structures, "
            f"energy RMSE {adv['energy_rmse_ev']:.4g} eV (offset {adv['energy_offset_ev']:.4g} eV removed), "
            f"force RMSE {adv['force_rmse_ev_per_angstrom']:.4g} eV/A",
        )
        if "cosine_median" in adv:
            _write(
                out,
                f"cos(A, F_app): median {adv['cosine_median']:.3f} (IQR {adv['cosine_q25']:.3f} to {adv['cosine_q75']:.3f}), "
                f"{adv['fraction_cosine_above_half']:.0%} above 0.5, {adv['undefined_cosine']} undefined (A or F_app zero)",
            )
        if "relaxation" in summary:
            errors = summary["relaxation"]["median_abs_energy_error_ev"]
            _write(
                out,
                f"relaxation with the approximate model: median |energy error| {errors[0]:.4g} -> {errors[-1]:.4g} eV "
                f"after {len(errors) - 1} steps",
            )
    else:
        from ase import Atoms

        from advmd.diagnostics import diagnose_conservative
        from advmd.openmm.platforms import check_platform_name

        try:
            check_platform_name(args.platform)
        except ValueError as error:
            raise SystemExit(f"advmd diagnose conservative: --platform: {error}") from None

        topology, positions = _molecule(args.pdb)
        numbers = [a.element.atomic_number for a in topology.atoms()]
        structures = [Atoms(numbers=numbers, positions=positions)]
        vectors = topology.getPeriodicBoxVectors()
        if vectors is not None:  # a periodic PDB: lambda and the NVE run see the same box
            from openmm import unit

            structures[0].cell = np.asarray(vectors.value_in_unit(unit.nanometer)) * 10.0
            structures[0].pbc = True
        if args.db:
            from advmd.data import Dataset

            rows = [r for r in Dataset(args.db, create=False).rows(label_status="done") if list(r.numbers) == numbers]
            picked = np.random.default_rng(args.seed).permutation(len(rows))[: max(args.structures - 1, 0)]
            structures += [rows[int(k)].toatoms() for k in sorted(picked)]
        summary = diagnose_conservative(
            model,
            structures,
            args.out,
            topology=topology,
            nve_ps=args.nve_ps,
            timestep_fs=args.timestep,
            temperature_k=args.temperature,
            platform=args.platform,
            seed=args.seed,
        )
        _write(out, f"Jacobian asymmetry lambda over {summary['structures']} structures: max {summary['lambda_max']:.3g}")
        if "nve" in summary:
            nve = summary["nve"]
            _write(
                out,
                f"NVE {nve['duration_ps']:.3g} ps at {nve['timestep_fs']} fs: "
                f"drift {nve['drift_kj_per_mol_per_ps']:.4g} kJ/mol/ps "
                f"({nve['drift_per_dof_kt_per_ps']:.3g} kT per degree of freedom per ps), "
                f"max |dE| {nve['max_deviation_kj_per_mol']:.4g} kJ/mol, "
                f"T {nve['temperature_start_k']:.0f} -> {nve['temperature_end_k']:.0f} K"
                + (" (DIVERGED)" if nve["diverged"] else ""),
            )
    _write(out, f"wrote {args.out}/{args.action}.json, .npz and .png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advmd", description="Committees of NN potentials in real MD.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    verbs = parser.add_subparsers(dest="verb", required=True)

    demo = verbs.add_parser("demo", help="committee MD of alanine dipeptide with the uncertainty bias")
    demo.add_argument("--model", default=None, help="exported committee file (default: the shipped alanine dipeptide committee)")
    demo.add_argument("--steps", type=int, default=4000, help="MD steps (default 4000 = 2 ps)")
    demo.add_argument("--report-interval", type=int, default=250, help="steps between printed reports")
    demo.add_argument("--timestep", type=float, default=0.5, help="fs (unconstrained hydrogens)")
    demo.add_argument("--temperature", type=float, default=300.0, help="K")
    demo.add_argument("--bias-strength", type=float, default=20.0, help="UDD amplitude A in kJ/mol, switched on half-way")
    demo.add_argument("--backend", choices=("torch", "python"), default="torch", help="TorchForce or PythonForce")
    demo.add_argument(
        "--platform", default="auto", help="OpenMM platform (Reference, CPU, CUDA, OpenCL; auto: advmd.openmm.choose_platform)"
    )
    demo.add_argument("--seed", type=int, default=0)

    bench = verbs.add_parser("bench", help="performance suite: times, ratios against targets, peak memory")
    bench.add_argument(
        "--sizes", default="22,648,3000", help="atom counts: 22 (alanine dipeptide) and water boxes (default 22,648,3000)"
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=25,
        help="repeats at 22 atoms (larger sizes: a sixth of them, at least 2, and half that for their OpenMM steps)",
    )
    bench.add_argument("--platform", default="auto", help="OpenMM platform (auto: advmd.openmm.choose_platform)")
    bench.add_argument("--attack-seeds", type=int, default=20)
    bench.add_argument("--attack-steps", type=int, default=5)
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes (one process each)")
    bench.add_argument("--json", default=None, help="also write the rows to this JSON file")

    info = verbs.add_parser("info", help="print an exported committee's metadata")
    info.add_argument("model", help="exported committee file")

    data = verbs.add_parser("data", help="create, import or export a dataset")
    data_verbs = data.add_subparsers(dest="action", required=True)
    init = data_verbs.add_parser("init", help="initial structures of a paper system, stored as pending rows")
    init.add_argument("--system", choices=("alanine", "ammonia", "double-well"), required=True)
    init.add_argument("--db", required=True, help="ASE database (SQLite file or postgresql:// URL)")
    init.add_argument("--n", type=int, default=100, help="frames (alanine), structures (ammonia) or candidates (double-well)")
    init.add_argument("--interval-ps", type=float, default=2.0, help="alanine: ps between frames (paper: 2)")
    init.add_argument("--labeler", default="xtb", help="ammonia: method used to relax and get the Hessian")
    init.add_argument("--seed", type=int, default=0)
    export = data_verbs.add_parser("export", help="write labelled rows to extended XYZ")
    export.add_argument("--db", required=True)
    export.add_argument("file")
    imp = data_verbs.add_parser("import", help="read extended XYZ frames into a dataset")
    imp.add_argument("--db", required=True)
    imp.add_argument("file")

    label = verbs.add_parser("label", help="label the pending rows of a dataset")
    label.add_argument("--db", required=True)
    label.add_argument("--labeler", required=True, help="amber14, xtb, dft, double-well-2d, double-well-1d")
    label.add_argument("--option", action="append", help="labeler option key=value (e.g. basis=def2-SVP); repeatable")
    label.add_argument("--batch-size", type=int, default=16, help="structures per transaction")
    label.add_argument("--quiet", action="store_true", help="no progress bar")
    label.add_argument("--retry-failed", action="store_true", help="label the structures that failed before again too")

    train = verbs.add_parser("train", help="train, evaluate, calibrate and export a committee")
    train.add_argument("--config", required=True, help="TOML config (see 'advmd example-config')")

    exp = verbs.add_parser("export", help="re-export a committee with another bias (no retraining)")
    exp.add_argument("model", help="exported committee file")
    exp.add_argument("--out", required=True, help="new file")
    exp.add_argument("--bias", choices=("none", "udd", "hal"), default=None, help="bias form (default: keep)")
    exp.add_argument("--width", type=float, default=None, help="UDD width B in eV")
    exp.add_argument("--default-strength", type=float, default=None, help="in the bias's unit (eV for udd, Angstrom for hal)")
    tables = exp.add_mutually_exclusive_group()
    tables.add_argument(
        "--tabulate",
        type=float,
        default=None,
        metavar="SPACING",
        help="fast inference: SchNet filters from quintic tables, knots every SPACING A (0.025 is a good value); "
        "default: as the input file",
    )
    tables.add_argument("--exact", action="store_true", help="write the exact filter networks (drop the input's tables)")

    md = verbs.add_parser("md", help="monitored, checkpointed committee MD from a TOML config (rerun to resume)")
    md.add_argument("--config", required=True, help="TOML config (see 'advmd example-config md')")
    md.add_argument("--quiet", action="store_true", help="no progress bar")

    loop = verbs.add_parser("loop", help="the active-learning loop (rerun the same command to resume)")
    loop.add_argument("--config", default=None, help="TOML config (see 'advmd example-config loop'); default: alanine demo")
    loop.add_argument("--directory", default=None, help="run directory (overrides [run] directory)")
    loop.add_argument("--generations", type=int, default=None, help="overrides [run] generations")
    loop.add_argument("--quiet", action="store_true", help="no progress lines")

    att = verbs.add_parser("attack", help="adversarial or random exploration from a dataset; adds selected pending rows")
    att.add_argument("--model", required=True, help="exported SchNet committee (from 'advmd train')")
    att.add_argument("--db", required=True, help="dataset: seeds are its labelled rows; selected structures are added")
    att.add_argument("--method", choices=("attack", "random"), default="attack", help="gradient attack or the random baseline")
    att.add_argument("--space", choices=("cartesian", "dihedral"), default="dihedral")
    att.add_argument(
        "--dihedrals", default="phi,psi", help="names (phi,psi,omega) or 0-based atom quadruples 4-6-8-14, comma-separated"
    )
    att.add_argument("--topology", default=None, help="PDB with the bonds (default: alanine dipeptide or covalent radii)")
    att.add_argument("--n-seeds", type=int, default=50, help="attacks per call (paper: 50)")
    att.add_argument("--steps", type=int, default=1000, help="Adam steps (paper: 1000)")
    att.add_argument("--learning-rate", type=float, default=5e-3, help="Adam learning rate (paper: 5e-3)")
    att.add_argument("--init-std", type=float, default=0.01, help="initial delta ~ N(0, s^2), Angstrom or rad (paper: 0.01)")
    att.add_argument("--kt", type=float, default=None, help="eV: maximise Eq. 13 at this kT (default: Eq. 10, sigma_F^2 alone)")
    att.add_argument("--max-norm", type=float, default=None, help="Cartesian: bound on each displacement's norm (Angstrom)")
    att.add_argument("--amplitude", type=float, default=math.pi, help="random method: uniform delta half-width (rad or Angstrom)")
    att.add_argument(
        "--threshold", type=float, default=None, help="Eq. 8 sigma_F^2 threshold (default: the model's calibrated one)"
    )
    att.add_argument("--energy-cap", type=float, default=2.0, help="eV above the lowest labelled energy (0 = no cap)")
    att.add_argument("--rmsd", type=float, default=0.1, help="deduplication RMSD in Angstrom (0 = off)")
    att.add_argument("--max-new", type=int, default=None, help="budget: at most this many new rows")
    att.add_argument("--generation", type=int, default=0, help="generation written into the provenance")
    att.add_argument("--seed", type=int, default=0)
    att.add_argument("--dry-run", action="store_true", help="select and report, write nothing")
    att.add_argument("--json", default=None, help="write the summary here")

    stab = verbs.add_parser("stability", help="the paper's stability test: many short runs in parallel processes")
    stab.add_argument("--model", default=None, help="exported committee (default: the shipped alanine dipeptide one)")
    stab.add_argument("--pdb", default=None, help="ground-state structure (default: alanine dipeptide)")
    stab.add_argument("--runs", type=int, default=100)
    stab.add_argument("--ps", type=float, default=5.0, help="duration of each run (ps)")
    stab.add_argument("--tmin", type=float, default=500.0, help="K")
    stab.add_argument("--tmax", type=float, default=1000.0, help="K")
    stab.add_argument("--timestep", type=float, default=0.5, help="fs")
    stab.add_argument("--bond-tolerance", type=float, default=0.5, help="Angstrom (0 = off)")
    stab.add_argument("--min-distance", type=float, default=0.7, help="Angstrom (0 = off)")
    stab.add_argument(
        "--hh-range", type=float, nargs=2, default=None, metavar=("MIN", "MAX"), help="H-H range in Angstrom (paper: 0.80 2.55)"
    )
    stab.add_argument("--energy-floor", type=float, default=None, help="eV")
    stab.add_argument("--processes", type=int, default=None, help="worker processes (openmm) or torch threads (batched)")
    stab.add_argument(
        "--engine",
        choices=("openmm", "batched"),
        default="openmm",
        help="openmm: one OpenMM simulation per run; batched: all runs in one batched committee evaluation (small molecules)",
    )
    stab.add_argument("--seed", type=int, default=0)
    stab.add_argument("--json", default=None, help="write the full result here")

    diag = verbs.add_parser("diagnose", help="model diagnostics: adversarial directions, non-conservative forces")
    diag_verbs = diag.add_subparsers(dest="action", required=True)
    adv = diag_verbs.add_parser("adversarial", help="cos(A, F_app) against a labelled dataset; error growth in relaxation")
    adv.add_argument("--db", required=True, help="dataset labelled by the reference method")
    adv.add_argument(
        "--model", default=None, help="approximate model: committee file or labeler name (default: the shipped committee)"
    )
    adv.add_argument("--reference", default=None, help="reference labeler for relaxed structures (default: the rows' labeler)")
    adv.add_argument("--max-structures", type=int, default=200, help="seeded subset of labelled rows (0 = all)")
    adv.add_argument("--relax-structures", type=int, default=20, help="structures relaxed with the model (0 = skip)")
    adv.add_argument("--relax-steps", type=int, default=10, help="steepest-descent steps")
    adv.add_argument("--step-size", type=float, default=0.01, help="descent rate in Angstrom^2/eV")
    adv.add_argument("--max-step", type=float, default=0.05, help="largest atomic move per step (Angstrom)")
    adv.add_argument("--align", choices=("mean", "none"), default="mean", help="remove the mean energy difference first")
    adv.add_argument("--seed", type=int, default=0)
    adv.add_argument("--out", default="diagnostics", help="output folder")
    con = diag_verbs.add_parser("conservative", help="Jacobian asymmetry lambda and NVE drift of a committee in OpenMM")
    con.add_argument("--model", default=None, help="exported committee (default: the shipped alanine dipeptide one)")
    con.add_argument("--pdb", default=None, help="topology and first structure (default: alanine dipeptide)")
    con.add_argument("--db", default=None, help="also measure lambda on labelled rows of this dataset (same molecule)")
    con.add_argument("--structures", type=int, default=5, help="structures for lambda (with --db)")
    con.add_argument("--nve-ps", type=float, default=1.0, help="NVE run length in ps (0 = skip)")
    con.add_argument("--timestep", type=float, default=0.5, help="fs")
    con.add_argument("--temperature", type=float, default=300.0, help="initial velocities, K")
    con.add_argument("--platform", default="auto", help="OpenMM platform (auto: advmd.openmm.choose_platform)")
    con.add_argument("--seed", type=int, default=1)
    con.add_argument("--out", default="diagnostics", help="output folder")

    example = verbs.add_parser("example-config", help="print a commented example config")
    example.add_argument("kind", nargs="?", choices=("train", "md", "loop"), default="train")
    return parser


def main(argv: Optional[List[str]] = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    from advmd.performance import tune_allocator

    tune_allocator()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    handlers = {
        "demo": _demo,
        "info": _info,
        "data": _data,
        "label": _label,
        "train": _train,
        "export": _export,
        "example-config": _example_config,
        "md": _md,
        "stability": _stability,
        "attack": _attack,
        "loop": _loop,
        "bench": _bench,
        "diagnose": _diagnose,
    }
    return handlers[args.verb](args, out)


#: Errors of the user's input (a missing file, a bad value): one line on the console, not a traceback.
USER_ERRORS = (ValueError, FileNotFoundError)


def console(argv: Optional[List[str]] = None) -> int:
    """The ``advmd`` command: :func:`main`, with bad input reported in one line (exit status 2).

    ``--verbose`` shows the traceback as well. In-process callers (and tests) use :func:`main`,
    which raises.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return main(argv)
    except USER_ERRORS as error:
        if "-v" in argv or "--verbose" in argv:
            raise
        verb = next((a for a in argv if not a.startswith("-")), "")
        _write(sys.stderr, f"advmd {verb}: {error} (advmd --verbose {verb} ... shows the traceback)".replace("  ", " "))
        return 2


if __name__ == "__main__":
    sys.exit(console())
