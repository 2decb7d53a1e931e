"""Adversarial attacks on committee uncertainty (paper Sec. II.C, III.C)."""

from advmd.attacks.attack import AttackConfig, AttackResult, attack, batch_statistics, log_partition_function
from advmd.attacks.dihedral import DihedralRotation, dihedral_angles, peptide_dihedrals

__all__ = [
    "AttackConfig",
    "AttackResult",
    "DihedralRotation",
    "attack",
    "batch_statistics",
    "dihedral_angles",
    "log_partition_function",
    "peptide_dihedrals",
]
