"""OpenMM integration: committee forces (TorchForce or PythonForce), uncertainty readout, bias schedules."""

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
from advmd.openmm.platforms import choose_platform
from advmd.openmm.schedules import AdaptiveBiasStrength, BiasSchedule, StepSchedule, UncertaintyRamp

__all__ = [
    "AdaptiveBiasStrength",
    "BACKENDS",
    "BiasSchedule",
    "StepSchedule",
    "UncertaintyRamp",
    "Uncertainty",
    "add_committee_force",
    "choose_platform",
    "create_committee_force",
    "create_system",
    "parameter_names",
    "read_uncertainty",
    "use_simple_executor",
]
