"""Committee models, statistics, uncertainty biases and the TorchScript export boundary."""

from advmd.committee.bias import BIAS_FORMS, CustomBias, HALBias, NoBias, UDDBias, make_bias
from advmd.committee.export import (
    export_committee,
    load_committee,
    load_inference_committee,
    load_trainable_committee,
    read_metadata,
)
from advmd.committee.members import SingleMember, TorchScriptCommittee, load_member
from advmd.committee.mlp import CoordinateMLPCommittee
from advmd.committee.potential import CommitteePotential
from advmd.committee.schnet import SchNetCommittee
from advmd.committee.statistics import (
    atomic_force_deviation,
    energy_variance,
    force_variance,
    max_force_deviation,
)

__all__ = [
    "BIAS_FORMS",
    "CommitteePotential",
    "CoordinateMLPCommittee",
    "CustomBias",
    "HALBias",
    "NoBias",
    "SchNetCommittee",
    "SingleMember",
    "TorchScriptCommittee",
    "UDDBias",
    "atomic_force_deviation",
    "energy_variance",
    "export_committee",
    "load_inference_committee",
    "load_committee",
    "load_trainable_committee",
    "read_metadata",
    "force_variance",
    "load_member",
    "make_bias",
    "max_force_deviation",
]
