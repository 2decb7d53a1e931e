"""Import of openmm-torch, after torch, with an actionable error when it is missing."""

import logging

import torch  # noqa: F401  (openmmtorch needs torch's libraries loaded first)

_previous = logging.root.manager.disable
try:
    # openmmtorch 1.5 imports the deprecated 'simtk.openmm' alias, which logs a root warning.
    logging.disable(logging.WARNING)
    from openmmtorch import TorchForce
except ImportError as error:  # pragma: no cover - exercised only without the plugin
    raise ImportError(
        "backend='torch' needs openmm-torch: pip install 'openmmtorch==1.5' (with torch==2.9.*, CUDA 12 build), "
        "or use backend='python' (OpenMM's PythonForce)"
    ) from error
finally:
    logging.disable(_previous)

__all__ = ["TorchForce"]
