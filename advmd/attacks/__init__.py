"""Adversarial attacks on committee uncertainty (paper Sec. II.C, III.C)."""

from advmd.attacks.attack import (
    AttackConfig,
    AttackResult,
    attack,
    batch_statistics,
    committee_statistics,
    log_partition_function,
    random_displacements,
)
from advmd.attacks.dihedral import DihedralRotation, dihedral_angles, peptide_dihedrals
from advmd.attacks.selection import Selection, SelectionConfig, pairwise_rmsd, rmsd_to_set, select

__all__ = [
    "AttackConfig",
    "AttackResult",
    "DihedralRotation",
    "Selection",
    "SelectionConfig",
    "attack",
    "batch_statistics",
    "committee_statistics",
    "pairwise_rmsd",
    "random_displacements",
    "rmsd_to_set",
    "select",
    "dihedral_angles",
    "log_partition_function",
    "peptide_dihedrals",
]
