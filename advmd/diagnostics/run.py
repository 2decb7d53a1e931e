"""The ``advmd diagnose`` jobs: load models and data, run the diagnostics, write JSON and PNG.

``diagnose_adversarial``: a dataset labelled by the reference, an approximate model
(a committee file or another labeler). Writes ``adversarial.json``,
``adversarial.npz`` (per-structure arrays) and ``adversarial.png`` (histogram of
``cos(A, F_app)``, the cosine against the energy above the minimum, error growth
during relaxation with the approximate model).

``diagnose_conservative``: a committee file (or a labeler, by finite differences)
and structures. Writes ``conservative.json``, ``conservative.npz`` and
``conservative.png`` (lambda per structure, the NVE total energy and temperature).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from advmd._io import write_text_atomic
from advmd.diagnostics.adversarial import (
    AdversarialResult,
    RelaxationResult,
    adversarial_directions,
    label_or_raise,
    relaxation_error_growth,
)
from advmd.diagnostics.conservative import (
    NVEResult,
    committee_force_function,
    force_jacobian,
    jacobian_asymmetry,
    labeler_force_function,
    nve_drift,
)

logger = logging.getLogger(__name__)

__all__ = ["committee_labeler", "diagnose_adversarial", "diagnose_conservative", "labeler_asymmetry", "resolve_model"]

PathLike = Union[str, os.PathLike]


def committee_labeler(model: Any, bias_strength: float = 0.0, name: Optional[str] = None) -> Any:
    """An advmd committee as a :class:`~advmd.labelers.Labeler` (mean energy and forces, plus bias if asked).

    Parameters
    ----------
    model : path-like or CommitteePotential
        An exported committee file or a potential module.
    bias_strength : float
        In the bias's model units (default 0: the committee mean alone).
    """
    from advmd.ase_calculator import CommitteeCalculator
    from advmd.labelers import ASECalculatorLabeler

    calculator = CommitteeCalculator(model, bias_strength=bias_strength)
    label = name or (f"committee:{Path(model).name}" if isinstance(model, (str, os.PathLike)) else "committee")
    return ASECalculatorLabeler(calculator, name=label, elements=set(calculator.potential.species))


def resolve_model(spec: str, role: str) -> Any:
    """A labeler from a name (``amber14``, ``xtb``, ...) or a committee from an exported ``.pt`` file."""
    from advmd.labelers import LABELERS, make_labeler

    path = Path(spec)
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"{role} model file {spec!r} does not exist; give an exported committee or a labeler name")
        return committee_labeler(path)
    if spec not in LABELERS:
        raise ValueError(f"{role} model {spec!r} is neither a committee file nor a labeler; labelers: {sorted(LABELERS)}")
    return make_labeler(spec)


def _reference_from_rows(rows: Sequence[Any]) -> Optional[str]:
    names = sorted({str(row.get("labeler")) for row in rows if row.get("labeler")})
    return names[0] if len(names) == 1 else None


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_adversarial(result: AdversarialResult, relaxation: Optional[RelaxationResult], title: str, path: Path) -> None:
    plt = _pyplot()

    panels = 3 if relaxation is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 3.6))
    cos = result.cosine[result.defined]
    axes[0].hist(cos, bins=np.linspace(-1, 1, 41), color="tab:red", alpha=0.8)
    axes[0].set_xlabel(r"$\cos\theta_F^{adv} = \cos(A, F_{app})$")
    axes[0].set_ylabel("structures")
    axes[0].set_title("adversarial direction vs model force", fontsize=9)
    axes[1].scatter(result.energy_above_minimum[result.defined], cos, s=8, alpha=0.6)
    axes[1].set_xlabel("reference energy above minimum (eV)")
    axes[1].set_ylabel(r"$\cos\theta_F^{adv}$")
    axes[1].set_ylim(-1.05, 1.05)
    axes[1].set_title("cosine vs energy", fontsize=9)
    if relaxation is not None:
        steps = np.arange(relaxation.abs_energy_error.shape[1])
        for row in relaxation.abs_energy_error:
            axes[2].plot(steps, row, color="0.7", lw=0.6)
        axes[2].plot(steps, np.nanmedian(relaxation.abs_energy_error, axis=0), "-o", color="tab:red", label="median")
        axes[2].set_xlabel("descent steps with the approximate model")
        axes[2].set_ylabel("|energy error| (eV)")
        axes[2].set_yscale("log")
        axes[2].legend(fontsize=8)
        axes[2].set_title("error growth during relaxation", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def diagnose_adversarial(
    db: PathLike,
    approximate: Any,
    out_dir: PathLike,
    *,
    reference: Any = None,
    max_structures: Optional[int] = 200,
    relax_structures: int = 20,
    relax_steps: int = 10,
    step_size: float = 0.01,
    max_displacement: float = 0.05,
    align: str = "mean",
    seed: int = 0,
) -> Dict[str, Any]:
    """Adversarial directions of ``approximate`` against the reference labels in a dataset.

    Parameters
    ----------
    db : path-like
        Dataset whose labelled rows hold the reference energies and forces.
    approximate : Labeler or str
        The model under test: a labeler, a labeler name, or an exported committee file.
    out_dir : path-like
        Where ``adversarial.json``, ``adversarial.npz`` and ``adversarial.png`` go.
    reference : Labeler or str, optional
        The reference method, needed for the relaxation test (it labels the relaxed
        structures). Default: the labeler recorded in the rows, if there is one.
        ``relax_structures=0`` skips the relaxation test.
    max_structures : int, optional
        Seeded random subset of the labelled rows (``None``: all).
    relax_structures, relax_steps, step_size, max_displacement
        See :func:`~advmd.diagnostics.relaxation_error_growth`.
    align : {"mean", "none"}
    seed : int

    Returns
    -------
    dict
        The JSON summary.
    """
    from advmd.data import Dataset

    if isinstance(approximate, str):
        approximate = resolve_model(approximate, "approximate")
    if max_structures is not None and (int(max_structures) != max_structures or max_structures < 1):
        raise ValueError(f"max_structures must be an integer >= 1 or None, got {max_structures!r}")
    if int(relax_structures) != relax_structures or relax_structures < 0:
        raise ValueError(f"relax_structures must be an integer >= 0, got {relax_structures!r}")
    dataset = Dataset(db, create=False)
    rows = list(dataset.rows(label_status="done"))
    if not rows:
        raise ValueError(f"dataset {db} has no labelled rows; label it first (advmd label)")
    rng = np.random.default_rng(seed)
    if max_structures is not None and len(rows) > max_structures:
        rows = [rows[k] for k in sorted(rng.choice(len(rows), size=int(max_structures), replace=False))]
    structures = [row.toatoms() for row in rows]
    for atoms in structures:
        atoms.calc = None
    reference_energies = np.array([float(row.energy) for row in rows])
    reference_forces = [np.array(row.forces) for row in rows]
    app_energies, app_forces = label_or_raise(approximate, structures, "approximate")
    result = adversarial_directions(
        reference_energies, reference_forces, app_energies, app_forces, align=align, numbers=[a.numbers for a in structures]
    )

    relaxation = None
    reference_name = None
    if relax_structures > 0:
        if reference is None:
            reference_name = _reference_from_rows(rows)
            if reference_name is None:
                raise ValueError(
                    "the rows do not name a single labeler; pass reference= (a labeler or its name) for the relaxation "
                    "test, or relax_structures=0 to skip it"
                )
            reference = reference_name
        if isinstance(reference, str):
            reference_name = reference
            reference = resolve_model(reference, "reference")
        chosen = sorted(rng.choice(len(structures), size=min(int(relax_structures), len(structures)), replace=False))
        relaxation = relaxation_error_growth(
            [structures[k] for k in chosen],
            approximate,
            reference,
            steps=relax_steps,
            step_size=step_size,
            max_displacement=max_displacement,
            offset=result.offset,
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: Dict[str, Any] = {
        "dataset": str(db),
        "approximate": getattr(approximate, "name", str(approximate)),
        "reference": reference_name or getattr(reference, "name", None) or _reference_from_rows(rows),
        "row_ids": [int(row.id) for row in rows],
        "align": align,
        "seed": seed,
        "adversarial": result.summary(),
    }
    arrays = {
        "row_ids": np.array(summary["row_ids"]),
        "cosine": result.cosine,
        "energy_error": result.energy_error,
        "energy_above_minimum": result.energy_above_minimum,
        "direction_norm": result.direction_norm,
        "force_error": result.force_error,
    }
    if relaxation is not None:
        summary["relaxation"] = relaxation.summary()
        arrays["relaxation_abs_energy_error"] = relaxation.abs_energy_error
        arrays["relaxation_displacement"] = relaxation.displacement
    np.savez(out / "adversarial.npz", **arrays)
    write_text_atomic(out / "adversarial.json", json.dumps(summary, indent=1))
    _plot_adversarial(
        result, relaxation, f"{summary['approximate']} approximating {summary['reference']}", out / "adversarial.png"
    )
    return summary


def _plot_conservative(lambdas: np.ndarray, nve: Optional[NVEResult], title: str, path: Path) -> None:
    plt = _pyplot()

    panels = 3 if nve is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 3.6), squeeze=False)
    axes = axes[0]
    axes[0].bar(np.arange(len(lambdas)), np.maximum(lambdas, 1e-16), color="tab:blue")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("structure")
    axes[0].set_ylabel(r"$\lambda = \|J_{anti}\| / \|J\|$")
    axes[0].set_title("Jacobian asymmetry", fontsize=9)
    if nve is not None:
        axes[1].plot(nve.time_ps, nve.total_energy - nve.total_energy[0], color="tab:red")
        axes[1].set_xlabel("time (ps)")
        axes[1].set_ylabel("E_total(t) - E_total(0) (kJ/mol)")
        axes[1].set_title(f"NVE drift {nve.drift_kj_per_mol_per_ps:.3g} kJ/mol/ps", fontsize=9)
        axes[2].plot(nve.time_ps, nve.temperature_k, color="tab:orange")
        axes[2].set_xlabel("time (ps)")
        axes[2].set_ylabel("kinetic temperature (K)")
        axes[2].set_title("temperature", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def diagnose_conservative(
    model: PathLike,
    structures: Sequence[Any],
    out_dir: PathLike,
    *,
    topology: Any = None,
    nve_ps: float = 1.0,
    timestep_fs: float = 0.5,
    temperature_k: float = 300.0,
    platform: Optional[str] = None,
    seed: int = 1,
) -> Dict[str, Any]:
    """Jacobian asymmetry at each structure and an NVE run of an exported committee in OpenMM.

    Parameters
    ----------
    model : path-like
        Exported committee file.
    structures : sequence of ase.Atoms (Angstrom)
        Where to measure lambda; the first also starts the NVE run.
    topology : openmm.app.Topology, optional
        Needed for the NVE run (``nve_ps=0`` skips it).
    """
    from advmd.committee import load_committee
    from advmd.openmm.platforms import check_platform_name
    from advmd.units import ANGSTROM_TO_NM

    if nve_ps > 0 and platform is not None:
        check_platform_name(platform)  # before the Jacobians, not after them
    potential, metadata = load_committee(model)
    lambdas = []
    for atoms in structures:
        cell = np.asarray(atoms.cell) if all(atoms.pbc) else None  # the same boundaries as the NVE run
        function = committee_force_function(potential, atoms.numbers, cell=cell)
        lambdas.append(jacobian_asymmetry(force_jacobian(function, atoms.positions, method="autograd")))
    lambdas_arr = np.array(lambdas)
    nve = None
    if nve_ps > 0:
        if topology is None:
            raise ValueError("the NVE run needs the OpenMM topology of the structures; pass topology= or nve_ps=0")
        from advmd.openmm import create_system

        # The bias off, as for the Jacobian above (a file's default strength would add the bias to the NVE run only).
        system = create_system(topology, model, remove_cm_motion=False, bias_strength=0.0)
        nve = nve_drift(
            system,
            structures[0].positions * ANGSTROM_TO_NM,
            timestep_fs=timestep_fs,
            duration_ps=nve_ps,
            temperature_k=temperature_k,
            platform=platform,
            seed=seed,
        )
    summary: Dict[str, Any] = {
        "model": str(model),
        "dtype": metadata.get("dtype"),
        "structures": len(lambdas),
        "lambda": [float(v) for v in lambdas_arr],
        "lambda_max": float(lambdas_arr.max()) if len(lambdas_arr) else float("nan"),
    }
    arrays: Dict[str, np.ndarray] = {"lambda": lambdas_arr}
    if nve is not None:
        summary["nve"] = nve.summary()
        arrays.update(
            time_ps=nve.time_ps,
            total_energy=nve.total_energy,
            potential_energy=nve.potential_energy,
            temperature_k=nve.temperature_k,
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "conservative.npz", **arrays)
    write_text_atomic(out / "conservative.json", json.dumps(summary, indent=1))
    _plot_conservative(lambdas_arr, nve, f"{Path(model).name}: conservative-force diagnostics", out / "conservative.png")
    return summary


def labeler_asymmetry(labeler: Any, structures: Sequence[Any], step: float = 1e-3) -> List[float]:
    """lambda of any labeler at each structure, by finite-difference Jacobians (6N force calls each)."""
    return [
        jacobian_asymmetry(force_jacobian(labeler_force_function(labeler, atoms), atoms.positions, "finite-difference", step))
        for atoms in structures
    ]
