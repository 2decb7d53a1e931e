"""Configuration of ``advmd loop``: defaults, TOML loading, and validation before any work."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any, Dict, List, Union

from advmd.config import merge_config

__all__ = ["DEFAULTS", "SOURCE_DEFAULTS", "SYSTEM_DEFAULTS", "load_loop_config", "validate_loop_config"]

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "run": {"directory": "advmd-loop", "generations": 2, "seed": 0},
    "system": {"name": "alanine", "initial": 40, "interval_ps": 1.0, "holdout": 20, "grid": 8},
    "labeler": {"name": "", "options": {}},
    "model": {
        "kind": "",
        "members": 4,
        "features": 32,
        "rbf": 16,
        "interactions": 2,
        "cutoff": 5.0,
        "hidden": [64, 64],
        "start_from": "auto",
    },
    "training": {
        "epochs": 60,
        "fine_tune": True,
        "fine_tune_epochs": 30,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "fine_tune_learning_rate": 3e-4,
        "threshold_percentile": 80.0,
        "energy_cap": 10.0,
    },
    "selection": {"budget": 12, "rmsd": 0.1, "energy_cap": 2.0},
    "executor": {"workers": 1, "scheduler": "", "threads": 1},
}

# What a system implies when [labeler] name or [model] kind is left empty.
SYSTEM_DEFAULTS = {
    "alanine": {"labeler": "amber14", "model": "schnet", "dimensions": 3},
    "ammonia": {"labeler": "xtb", "model": "schnet", "dimensions": 3},
    "double-well": {"labeler": "double-well-2d", "model": "mlp", "dimensions": 2},
}

SOURCE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "attack-dihedral": {
        "seeds": 16,
        "steps": 100,
        "learning_rate": 0.02,
        "init_std": 0.01,
        "kt": 0.0,
        "dihedrals": ["phi", "psi"],
    },
    "attack-cartesian": {"seeds": 16, "steps": 100, "learning_rate": 0.01, "init_std": 0.01, "kt": 0.0, "max_norm": 0.0},
    "random": {"seeds": 16, "space": "cartesian", "amplitude": 0.2, "dihedrals": ["phi", "psi"]},
    "md": {"walkers": 2, "frames": 20, "interval": 50, "temperature": 300.0, "timestep_fs": 0.5},
    "biased-md": {"walkers": 2, "frames": 20, "interval": 50, "temperature": 300.0, "timestep_fs": 0.5, "bias_strength": 20.0},
}


def _read(source: Union[str, Path, Dict[str, Any]]) -> tuple:
    if isinstance(source, dict):
        return copy.deepcopy(source), Path(".")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist; see 'advmd example-config loop'")
    try:
        return tomllib.loads(path.read_text()), path.parent
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from error


def load_loop_config(source: Union[str, Path, Dict[str, Any], None] = None) -> Dict[str, Any]:
    """Defaults merged with a TOML file (or dict); ``[[sources]]`` tables merged with their kind's defaults.

    ``[run] directory`` is taken relative to the config file. The result is validated
    (:func:`validate_loop_config`) before it is returned, so errors come before any work.
    """
    given, base = _read(source) if source is not None else ({}, Path("."))
    sources = given.pop("sources", None)
    config = merge_config(DEFAULTS, given)
    if sources is None:  # phi/psi attacks for the peptide, Cartesian attacks otherwise
        sources = [{"kind": "attack-dihedral" if config["system"]["name"] == "alanine" else "attack-cartesian"}]
    if not isinstance(sources, list) or not sources:
        raise ValueError("config: [[sources]] must list at least one exploration source")
    merged: List[Dict[str, Any]] = []
    for k, item in enumerate(sources):
        if not isinstance(item, dict) or "kind" not in item:
            raise ValueError(f"config: [[sources]] entry {k} needs a kind; choose from {sorted(SOURCE_DEFAULTS)}")
        kind = item["kind"]
        if kind not in SOURCE_DEFAULTS:
            raise ValueError(f"config: [[sources]] entry {k} has unknown kind {kind!r}; choose from {sorted(SOURCE_DEFAULTS)}")
        entry = {"kind": kind, **copy.deepcopy(SOURCE_DEFAULTS[kind])}
        for key, value in item.items():
            if key != "kind" and key not in entry:
                raise ValueError(f"config: unknown key {key!r} in [[sources]] entry {k} ({kind}); valid keys are {sorted(entry)}")
            entry[key] = value
        merged.append(entry)
    config["sources"] = merged
    directory = Path(config["run"]["directory"])
    config["run"]["directory"] = str(directory if directory.is_absolute() else base / directory)
    system = config["system"]["name"]
    if system in SYSTEM_DEFAULTS:
        config["labeler"]["name"] = config["labeler"]["name"] or SYSTEM_DEFAULTS[system]["labeler"]
        config["model"]["kind"] = config["model"]["kind"] or SYSTEM_DEFAULTS[system]["model"]
    start = config["model"]["start_from"]
    if start == "auto":  # alanine: fine-tune the shipped committee (trained on 400 amber14 frames); others: scratch
        start = "shipped" if system == "alanine" else "none"
    if start == "shipped":
        from advmd.systems import resource_path

        start = str(resource_path("alanine-dipeptide-committee.pt"))
    elif start not in ("none", "") and not Path(start).is_absolute():
        start = str(base / start)
    config["model"]["start_from"] = "" if start in ("none", "") else start
    validate_loop_config(config)
    return config


def _positive_int(section: str, key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config: [{section}] {key} must be an integer >= {minimum}, got {value!r}")


def _positive(section: str, key: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"config: [{section}] {key} must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def validate_loop_config(config: Dict[str, Any]) -> None:
    """Every check that can fail before work starts, each naming its field."""
    from advmd.labelers import make_labeler

    run, system, model, training = config["run"], config["system"], config["model"], config["training"]
    _positive_int("run", "generations", run["generations"], 0)
    _positive_int("run", "seed", run["seed"], 0)
    if system["name"] not in SYSTEM_DEFAULTS:
        raise ValueError(f"config: [system] name {system['name']!r} is not one of {sorted(SYSTEM_DEFAULTS)}")
    for key in ("initial", "holdout", "grid"):
        _positive_int("system", key, system[key], 2)
    _positive("system", "interval_ps", system["interval_ps"])
    if model["kind"] not in ("schnet", "mlp"):
        raise ValueError(f"config: [model] kind must be 'schnet' or 'mlp', got {model['kind']!r}")
    if model["kind"] == "schnet" and system["name"] == "double-well":
        raise ValueError("config: [model] kind 'schnet' cannot represent the one-particle double well; use kind = 'mlp'")
    _positive_int("model", "members", model["members"], 2)
    if model["start_from"] and not Path(model["start_from"]).is_file():
        raise ValueError(f"config: [model] start_from {model['start_from']!r} does not exist (a committee file, or 'none')")
    for key in ("features", "rbf", "interactions"):
        _positive_int("model", key, model[key])
    _positive("model", "cutoff", model["cutoff"])
    if (
        not isinstance(model["hidden"], list)
        or not model["hidden"]
        or not all(isinstance(h, int) and h > 0 for h in model["hidden"])
    ):
        raise ValueError(f"config: [model] hidden must list positive layer widths, got {model['hidden']!r}")
    for key in ("epochs", "fine_tune_epochs", "batch_size"):
        _positive_int("training", key, training[key])
    _positive("training", "learning_rate", training["learning_rate"])
    _positive("training", "fine_tune_learning_rate", training["fine_tune_learning_rate"])
    _positive("training", "energy_cap", training["energy_cap"], allow_zero=True)
    if not 0 < training["threshold_percentile"] <= 100:
        raise ValueError(f"config: [training] threshold_percentile must be in (0, 100], got {training['threshold_percentile']!r}")
    selection = config["selection"]
    _positive_int("selection", "budget", selection["budget"])
    _positive("selection", "rmsd", selection["rmsd"], allow_zero=True)
    _positive("selection", "energy_cap", selection["energy_cap"], allow_zero=True)
    executor = config["executor"]
    _positive_int("executor", "workers", executor["workers"])
    _positive_int("executor", "threads", executor["threads"])
    if not isinstance(executor["scheduler"], str):
        raise ValueError(
            f'config: [executor] scheduler must be a Dask scheduler address such as "tcp://host:8786", '
            f"got {executor['scheduler']!r}"
        )
    if executor["scheduler"]:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError(
                "config: [executor] scheduler is set but Dask is not installed; pip install 'advmd[cluster]'"
            ) from None
    for k, source in enumerate(config["sources"]):
        where = f"sources entry {k} ({source['kind']})"
        for key in ("seeds", "steps", "walkers", "frames", "interval"):
            if key in source:
                _positive_int(where, key, source[key])
        for key in ("learning_rate", "amplitude", "temperature", "timestep_fs"):
            if key in source:
                _positive(where, key, source[key])
        for key in ("init_std", "kt", "max_norm", "bias_strength"):
            if key in source:
                _positive(where, key, source[key], allow_zero=True)
        if source.get("space", "cartesian") not in ("cartesian", "dihedral"):
            raise ValueError(f"config: [{where}] space must be 'cartesian' or 'dihedral', got {source['space']!r}")
        dihedral = source["kind"] == "attack-dihedral" or (source["kind"] == "random" and source["space"] == "dihedral")
        if dihedral and system["name"] != "alanine" and any(isinstance(d, str) for d in source["dihedrals"]):
            raise ValueError(f"config: [{where}] dihedral names need a peptide; give atom quadruples like [0, 1, 2, 3]")
        if source["kind"] in ("md", "biased-md") and model["kind"] != "schnet":
            raise ValueError(f"config: [{where}] MD sources run the committee in OpenMM and need [model] kind 'schnet'")
    try:
        make_labeler(config["labeler"]["name"], **dict(config["labeler"]["options"]))
    except ImportError as error:
        raise ValueError(f"config: [labeler] name {config['labeler']['name']!r} needs a missing package: {error}") from None
    except (ValueError, TypeError) as error:
        raise ValueError(f"config: [labeler] {error}") from None
