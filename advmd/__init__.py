"""advmd: committees of neural-network potentials in real molecular dynamics.

Committees run inside OpenMM (openmm-torch ``TorchForce`` or OpenMM's
``PythonForce``) with an uncertainty bias whose strength is a global parameter.

``torch`` is imported here, before anything imports ``openmmtorch``: the
openmm-torch wheel needs torch's libraries (libnvrtc among them) loaded first.
"""

import torch  # noqa: F401  (must precede any import of openmmtorch)

__version__ = "0.1.0"

__all__ = ["__version__"]
