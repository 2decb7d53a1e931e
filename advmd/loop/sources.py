"""Exploration jobs of the loop. Each is a picklable top-level function of one dict, run by an executor.

* :func:`explore_job`: attacks and random displacements (``attack-dihedral``,
  ``attack-cartesian``, ``random``) from seeds drawn out of the dataset's labelled rows.
* :func:`md_walker_job`: one Langevin walker driven by the exported committee inside
  OpenMM (``md``; ``biased-md`` with the UDD bias on). It keeps a frame every ``interval``
  steps and stops at the first unstable frame: non-finite coordinates, a bond
  stretched or compressed by more than 0.5 Angstrom, or two atoms that are not 1-2 or
  1-3 neighbours closer than 0.7 Angstrom (``min_distance``). The stable flag feeds the
  loop's stable-MD fraction.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

__all__ = ["explore_job", "md_walker_job", "openmm_topology"]


def explore_job(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Candidates of one attack/random source as a dict of arrays (see :class:`~advmd.attacks.job.Candidates`)."""
    import torch

    from advmd.attacks import AttackConfig
    from advmd.attacks.job import ExplorationConfig, generate_candidates
    from advmd.committee import load_trainable_committee

    torch.set_num_threads(int(spec.get("threads", torch.get_num_threads())))
    source = spec["source"]
    committee, _ = load_trainable_committee(spec["model"])
    kind = source["kind"]
    space = {"attack-dihedral": "dihedral", "attack-cartesian": "cartesian"}.get(kind, source.get("space", "cartesian"))
    config = ExplorationConfig(
        method="random" if kind == "random" else "attack",
        space=space,
        dihedrals=[d if isinstance(d, str) else tuple(d) for d in source.get("dihedrals", [])],
        n_seeds=int(source["seeds"]),
        attack=AttackConfig(
            steps=int(source.get("steps", 1)),
            learning_rate=float(source.get("learning_rate", 1e-2)),
            init_std=float(source.get("init_std", 0.0)),
            kt=float(source["kt"]) if source.get("kt") else None,
            max_norm=float(source["max_norm"]) if source.get("max_norm") else None,
            seed=int(spec["seed"]),
        ),
        amplitude=float(source.get("amplitude", math.pi)),
        energy_cap=None,
        seed=int(spec["seed"]),
    )
    candidates = generate_candidates(
        committee,
        spec["numbers"],
        spec["pool"],
        spec["pool_ids"],
        spec["pool_energies"],
        config,
        spec.get("topology"),
        spec.get("partition_energies"),
    )
    dimensions = int(getattr(committee, "dimensions", 3))
    if dimensions < 3:  # coordinates the model does not see stay where the seed had them
        parents = {int(i): p for i, p in zip(spec["pool_ids"], spec["pool"])}
        frozen = np.array([parents[int(i)] for i in candidates.parent_ids])
        candidates.positions[:, :, dimensions:] = frozen[:, :, dimensions:]
    return {
        "source": candidates.source,
        "positions": candidates.positions,
        "mean_energy": candidates.mean_energy,
        "sigma_f2": candidates.sigma_f2,
        "initial_sigma_f2": candidates.initial_sigma_f2,
        "parent_ids": candidates.parent_ids,
    }


def openmm_topology(numbers, bonds):
    """A one-residue OpenMM topology with the given elements and bonds (for molecules without a PDB)."""
    from openmm import app

    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    atoms = [topology.addAtom(f"A{k}", app.Element.getByAtomicNumber(int(z)), residue) for k, z in enumerate(numbers)]
    for a, b in bonds:
        topology.addBond(atoms[int(a)], atoms[int(b)])
    return topology


def md_walker_job(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One committee MD walker; returns ``frames`` (F, N, 3) Angstrom, ``stable``, ``reason``, ``time_ps``."""
    import openmm
    from openmm import unit

    from advmd import units
    from advmd.attacks.job import molecule_graph
    from advmd.md.stability import Frame, MinimumDistanceChecker
    from advmd.openmm import create_system
    from advmd.openmm.platforms import choose_platform

    numbers, start = spec["numbers"], np.asarray(spec["start"], dtype=np.float64)
    bonds, topology = molecule_graph(numbers, start, spec.get("topology"))
    if topology is None:
        topology = openmm_topology(numbers, bonds)
    bonds = np.asarray(bonds, dtype=int).reshape(-1, 2)
    reference = np.linalg.norm(start[bonds[:, 1]] - start[bonds[:, 0]], axis=1)
    # atoms that are not 1-2 or 1-3 neighbours may not collapse onto each other (a hole in the committee)
    close = MinimumDistanceChecker.from_topology(topology, float(spec.get("min_distance", 0.7)))
    system = create_system(topology, spec["model"], bias_strength=float(spec.get("bias_strength", 0.0)))
    integrator = openmm.LangevinMiddleIntegrator(
        float(spec["temperature"]) * unit.kelvin, 1.0 / unit.picosecond, float(spec["timestep_fs"]) * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(int(spec["seed"]) + 1)
    platform = choose_platform(system)
    properties = {"Threads": str(int(spec.get("threads", 1)))} if platform.getName() == "CPU" else {}
    context = openmm.Context(system, integrator, platform, properties)
    context.setPositions(start * units.ANGSTROM_TO_NM)
    context.setVelocitiesToTemperature(float(spec["temperature"]) * unit.kelvin, int(spec["seed"]) + 1)
    frames, stable, reason, step = [], True, "", 0
    for _ in range(int(spec["frames"])):
        try:
            integrator.step(int(spec["interval"]))
        except openmm.OpenMMException as error:
            stable, reason = False, f"OpenMM: {error}"
            break
        step += int(spec["interval"])
        x = context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer) * units.NM_TO_ANGSTROM
        if not np.all(np.isfinite(x)):
            stable, reason = False, "non-finite coordinates"
            break
        deviation = np.abs(np.linalg.norm(x[bonds[:, 1]] - x[bonds[:, 0]], axis=1) - reference) if len(bonds) else np.zeros(1)
        if deviation.max() > 0.5:
            k = int(np.argmax(deviation))
            stable, reason = False, f"bond {bonds[k, 0]}-{bonds[k, 1]} off by {deviation[k]:.2f} A"
            break
        collapse = close.check(
            Frame(step=step, time_ps=step * float(spec["timestep_fs"]) * 1e-3, positions=x, potential_energy=0.0)
        )
        if collapse is not None:
            stable, reason = False, collapse
            break
        frames.append(np.asarray(x))
    return {
        "frames": np.array(frames).reshape(-1, len(numbers), 3),
        "stable": stable,
        "reason": reason,
        "time_ps": step * float(spec["timestep_fs"]) * 1e-3,
        "parent_id": int(spec["parent_id"]),
    }
