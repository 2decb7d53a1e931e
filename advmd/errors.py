"""Exceptions of advmd. Each message names the field, the value and the fix."""

from __future__ import annotations


class AdvmdError(Exception):
    """Base class of advmd's own errors."""


class ModelFileError(AdvmdError, ValueError):
    """A model file is missing, unreadable, or not an advmd/TorchScript archive."""


class TopologyMismatchError(AdvmdError, ValueError):
    """A topology or system does not fit the model (species, atom counts)."""
