"""Datasets: structures, labels and provenance in an ASE database; extended XYZ exchange."""

from advmd.data.store import SOURCES, Dataset, DatasetError, Provenance

__all__ = ["Dataset", "DatasetError", "Provenance", "SOURCES"]
