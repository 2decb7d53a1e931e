"""OpenMM integration: committee forces (TorchForce or PythonForce) and uncertainty readout."""

from advmd.openmm.forces import (
    BACKENDS,
    Uncertainty,
    add_committee_force,
    create_committee_force,
    create_system,
    parameter_names,
    read_uncertainty,
    use_simple_executor,
)

__all__ = [
    "BACKENDS",
    "Uncertainty",
    "add_committee_force",
    "create_committee_force",
    "create_system",
    "parameter_names",
    "read_uncertainty",
    "use_simple_executor",
]
