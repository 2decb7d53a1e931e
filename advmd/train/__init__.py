"""Committee training on energies and forces (paper Eq. 3)."""

from advmd.train.trainer import (
    StructureSet,
    TrainingConfig,
    TrainingResult,
    align_reference_energies,
    calibrate_threshold,
    evaluate,
    fit_reference_energies,
    predict,
    train_committee,
)

__all__ = [
    "StructureSet",
    "TrainingConfig",
    "TrainingResult",
    "align_reference_energies",
    "calibrate_threshold",
    "evaluate",
    "fit_reference_energies",
    "predict",
    "train_committee",
]
