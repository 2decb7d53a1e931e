"""Model diagnostics from the seeds: adversarial directions (000) and non-conservative forces (004).

* :func:`adversarial_directions`: ``A = 2 (E_acc - E_app)(F_app - F_acc)`` and its cosine with
  the approximate model's force, per structure; :func:`relaxation_error_growth`: the energy
  error along steepest descent with the approximate model.
* :func:`force_jacobian` and :func:`jacobian_asymmetry`: ``lambda = ||J_anti|| / ||J||``
  (0 for conservative forces, 1 for a rotational field); :func:`nve_drift`: total-energy drift
  and kinetic temperature of an NVE run in OpenMM.
* :func:`diagnose_adversarial` and :func:`diagnose_conservative`: the ``advmd diagnose`` jobs
  (JSON, NPZ and PNG outputs).
"""

from advmd.diagnostics.adversarial import (
    AdversarialResult,
    RelaxationResult,
    adversarial_direction,
    adversarial_directions,
    force_cosine,
    relaxation_error_growth,
)
from advmd.diagnostics.conservative import (
    NVEResult,
    committee_force_function,
    force_jacobian,
    jacobian_asymmetry,
    labeler_force_function,
    nve_drift,
)
from advmd.diagnostics.run import committee_labeler, diagnose_adversarial, diagnose_conservative, labeler_asymmetry, resolve_model

__all__ = [
    "AdversarialResult",
    "NVEResult",
    "RelaxationResult",
    "adversarial_direction",
    "adversarial_directions",
    "committee_force_function",
    "committee_labeler",
    "diagnose_adversarial",
    "diagnose_conservative",
    "force_cosine",
    "force_jacobian",
    "jacobian_asymmetry",
    "labeler_asymmetry",
    "labeler_force_function",
    "nve_drift",
    "relaxation_error_growth",
    "resolve_model",
]
