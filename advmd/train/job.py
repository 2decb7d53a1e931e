"""A training job driven by a TOML configuration (``advmd train --config``).

Reads labelled rows from the dataset, splits them reproducibly, trains the
committee (resuming from a checkpoint if one exists), evaluates it on the test
split, calibrates the paper's Eq. 8 threshold on the training split, and
exports one TorchScript file whose metadata records all of it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Union

from advmd.config import merge_config

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "load_config", "validate_train_config", "run_training"]

DEFAULTS: Dict[str, Dict[str, Any]] = {
    "data": {"database": "data.db", "split": [0.8, 0.1, 0.1], "split_seed": 0},
    "model": {"members": 5, "features": 64, "rbf": 32, "interactions": 3, "cutoff": 5.0, "seed": 0, "fine_tune_from": ""},
    "training": {
        "epochs": 300,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "energy_weight": 1.0,
        "force_weight": 1.0,
        "bootstrap": True,
        "lr_factor": 0.5,
        "lr_patience": 15,
        "min_learning_rate": 1e-5,
        "early_stopping_patience": 40,
        "seed": 0,
    },
    "bias": {"form": "udd", "width": 0.05, "default_strength": 0.0},
    "output": {
        "model": "committee.pt",
        "checkpoint": "committee.checkpoint.pt",
        "metrics": "committee.metrics.json",
        "threshold_percentile": 80.0,
    },
}


def load_config(source: Union[str, os.PathLike, Dict[str, Any]]) -> Dict[str, Any]:
    """Merge a TOML file (or dict) over :data:`DEFAULTS`; unknown sections or keys are errors.

    Relative paths in ``[data]``, ``[output]`` and ``model.fine_tune_from`` are taken relative to the config file.
    """
    path_keys = [
        ("data", "database"),
        ("output", "model"),
        ("output", "checkpoint"),
        ("output", "metrics"),
        ("model", "fine_tune_from"),
    ]
    config = merge_config(DEFAULTS, source, path_keys, example="train.example.toml")
    validate_train_config(config)
    return config


def validate_train_config(config: Dict[str, Any]) -> None:
    """Every check that can fail before training starts, each naming its field."""
    import math

    from advmd.committee.bias import BIAS_FORMS
    from advmd.train.trainer import TrainingConfig

    split = config["data"]["split"]
    numbers = isinstance(split, (list, tuple)) and all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in split)
    if not numbers or len(split) != 3 or any(f < 0 for f in split) or not math.isclose(sum(split), 1.0, abs_tol=1e-9):
        raise ValueError(f"[data] split must be three fractions (train, validation, test) >= 0 summing to 1, got {split!r}")
    if split[1] <= 0:
        raise ValueError(f"[data] split needs a validation fraction > 0 (early stopping uses it), got {split!r}")
    model = config["model"]
    for key, low in (("members", 2), ("features", 2), ("rbf", 2), ("interactions", 1)):
        if model[key] < low:
            raise ValueError(f"[model] {key} must be an integer >= {low}, got {model[key]!r}")
    if not model["cutoff"] > 0:
        raise ValueError(f"[model] cutoff must be > 0 Angstrom, got {model['cutoff']!r}")
    try:
        TrainingConfig(**config["training"]).validate()
    except ValueError as error:
        raise ValueError(f"[training] {str(error).replace('TrainingConfig.', '')}") from None
    bias = config["bias"]
    if bias["form"] not in BIAS_FORMS:
        raise ValueError(f"[bias] form must be one of {sorted(BIAS_FORMS)}, got {bias['form']!r}")
    if bias["form"] == "udd" and not bias["width"] > 0:
        raise ValueError(f"[bias] width must be > 0 eV for the udd form, got {bias['width']!r}")
    if not (math.isfinite(bias["default_strength"]) and bias["default_strength"] >= 0):
        raise ValueError(f"[bias] default_strength must be a finite number >= 0, got {bias['default_strength']!r}")
    percentile = config["output"]["threshold_percentile"]
    if not 0 < percentile <= 100:
        raise ValueError(f"[output] threshold_percentile must be in (0, 100], got {percentile!r}")


def run_training(config: Dict[str, Any]) -> Dict[str, Any]:
    """Run a training job; returns the metrics written to ``[output] metrics``."""
    from advmd.committee import CommitteePotential, SchNetCommittee, export_committee, load_trainable_committee, make_bias
    from advmd.data import Dataset
    from advmd.train.trainer import TrainingConfig, calibrate_threshold, evaluate, train_committee

    data_cfg, model_cfg, train_cfg, bias_cfg, out_cfg = (config[k] for k in ("data", "model", "training", "bias", "output"))
    database = data_cfg["database"]
    if not str(database).startswith(("postgresql://", "postgres://")) and not Path(database).is_file():
        raise FileNotFoundError(
            f"[data] database {database!r} does not exist; create it with 'advmd data init' and 'advmd label'"
        )
    dataset = Dataset(database, create=False)
    train_ids, val_ids, test_ids = dataset.split(tuple(data_cfg["split"]), seed=int(data_cfg["split_seed"]))
    if len(train_ids) < 2 or not val_ids:
        raise ValueError(
            f"[data] split {data_cfg['split']} of {len(dataset.labelled_ids())} labelled rows leaves {len(train_ids)} training "
            f"and {len(val_ids)} validation structures; label more structures or change the split"
        )
    train_set, val_set = dataset.structure_set(train_ids), dataset.structure_set(val_ids)
    sizes = set(int(n) for n in (train_set.offsets[1:] - train_set.offsets[:-1]))
    if min(sizes) < 2:
        raise ValueError(
            "[data] the dataset holds one-particle structures (e.g. the 2D double well): a SchNet committee sees "
            "only interatomic distances and cannot represent a function of absolute coordinates"
        )
    test_set = dataset.structure_set(test_ids) if test_ids else val_set
    species = sorted({int(z) for z in train_set.numbers})

    fine_tune_from = model_cfg["fine_tune_from"]
    if fine_tune_from:
        committee, _ = load_trainable_committee(fine_tune_from)
        missing = sorted(set(species) - set(committee.species))
        if missing:
            raise ValueError(f"[model] fine_tune_from {fine_tune_from!r} lacks species Z={missing} present in the data")
    else:
        committee = SchNetCommittee(
            species,
            n_members=int(model_cfg["members"]),
            n_features=int(model_cfg["features"]),
            n_rbf=int(model_cfg["rbf"]),
            n_interactions=int(model_cfg["interactions"]),
            cutoff=float(model_cfg["cutoff"]),
            seed=int(model_cfg["seed"]),
        )
    # Elements of validation or test rows the committee does not know (a fine-tuned one may know more than the
    # training rows hold): found now, not by the test evaluation after the whole training run.
    unseen = sorted({int(z) for z in list(val_set.numbers) + list(test_set.numbers)} - set(committee.species))
    if unseen:
        raise ValueError(
            f"[data] elements Z={unseen} appear only in validation or test rows: the committee cannot learn them (no "
            "training structure, no reference energy); label more structures containing them, or change the split"
        )
    training = TrainingConfig(**train_cfg, fine_tune=bool(fine_tune_from))
    result = train_committee(committee, train_set, training, validation=val_set, checkpoint=out_cfg["checkpoint"] or None)
    test_metrics = evaluate(committee, test_set)
    threshold = calibrate_threshold(committee, train_set, float(out_cfg["threshold_percentile"]))

    bias_kwargs = {"width": float(bias_cfg["width"])} if bias_cfg["form"] == "udd" else {}
    potential = CommitteePotential(committee, make_bias(bias_cfg["form"], committee.n_members, **bias_kwargs))
    metrics = {
        "test": test_metrics,
        "test_split_is_validation": not test_ids,
        "training": {k: v for k, v in result.as_dict().items() if k != "history"},
        "uncertainty_threshold": threshold,
        "dataset": {"database": str(database), "train": len(train_ids), "validation": len(val_ids), "test": len(test_ids)},
    }
    export_committee(
        potential,
        out_cfg["model"],
        default_strength=float(bias_cfg["default_strength"]),
        extra_metadata={
            "uncertainty_threshold": threshold,
            "training_metrics": metrics,
            "training_ids": [int(i) for i in train_ids],  # rows of the database (Q of Eq. 11-12 for attacks)
        },
    )
    Path(out_cfg["metrics"]).parent.mkdir(parents=True, exist_ok=True)
    Path(out_cfg["metrics"]).write_text(json.dumps({**metrics, "history": result.history}, indent=1))
    logger.info(
        "wrote %s; test committee-mean RMSE E %.4f eV F %.4f eV/A",
        out_cfg["model"],
        test_metrics["mean_energy_rmse"],
        test_metrics["mean_force_rmse"],
    )
    return metrics
