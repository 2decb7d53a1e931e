"""Import of openmm-torch with its kernels registered, whatever the user imported first.

OpenMM loads its plugin libraries when ``openmm`` is first imported. The
openmm-torch kernel libraries need libtorch, so if ``openmm`` was imported
before ``torch`` they fail to load (recorded in
``Platform.getPluginLoadFailures()``) and a Context with a TorchForce reports
"does not support all required kernels". This module imports torch, then
openmmtorch, then loads any Torch plugin that failed, so the order of a user's
imports does not matter.
"""

import logging
import os
import tempfile

import torch  # noqa: F401  (openmmtorch needs torch's libraries loaded first)

logger = logging.getLogger(__name__)

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


def _reload_failed_torch_plugins() -> None:
    import openmm

    failed = []
    for message in openmm.Platform.getPluginLoadFailures():
        path = message.replace("Error loading library ", "", 1).split(": ", 1)[0]
        if "Torch" in os.path.basename(path) and os.path.isfile(path):
            failed.append(path)
    if not failed:
        return
    # loadPluginsFromDirectory registers kernel factories; load only the failed Torch plugins through symlinks
    # (their dependency libOpenMMTorch.so is already in the process since openmmtorch was imported).
    with tempfile.TemporaryDirectory(prefix="advmd-plugins-") as directory:
        for path in failed:
            os.symlink(path, os.path.join(directory, os.path.basename(path)))
        loaded = openmm.Platform.loadPluginsFromDirectory(directory)
    logger.debug("reloaded openmm-torch plugins after torch import: %s", loaded)


_reload_failed_torch_plugins()

__all__ = ["TorchForce"]
