"""Molecular dynamics helpers: sampling, (later) production runs and monitoring."""

from advmd.md.sampling import langevin_frames

__all__ = ["langevin_frames"]
