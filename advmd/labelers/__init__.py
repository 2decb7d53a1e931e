"""Reference methods that label structures with energies and forces (eV, eV/Angstrom)."""

from advmd.labelers.openmm_ff import OpenMMLabeler

__all__ = ["OpenMMLabeler"]
