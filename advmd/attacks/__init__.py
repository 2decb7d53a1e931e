"""Adversarial attacks on committee uncertainty (paper Sec. II.C, III.C)."""

from advmd.attacks.dihedral import DihedralRotation, dihedral_angles, peptide_dihedrals

__all__ = ["DihedralRotation", "dihedral_angles", "peptide_dihedrals"]
