"""Choosing the OpenMM platform for a System that holds committee forces.

On a machine without a GPU, OpenMM's own choice is the CPU platform (the fastest by
its speed rating). For a System whose only forces are committee forces, that choice is
not the fastest: openmm-torch's ``TorchForce`` and OpenMM's ``PythonForce`` run the same
kernels on the CPU platform as on the Reference platform, while the CPU platform's
integrator and force bookkeeping cost about 100-150 us per step (its thread pool), against
2-3 us on the Reference platform. Measured on alanine dipeptide with the benchmark committee
(M=5, 8.2-8.7 ms per model call, 2-core machine), pooled over 120 interleaved repeats: a
TorchForce step costs 1.04x the raw model call on the CPU platform and 0.97x on the Reference
platform (see docs/benchmarks.md).
A System with classical forces (a force field, an ML/MM set-up) needs the CPU platform's
optimised kernels instead.

``choose_platform`` makes that choice: a GPU platform where PyTorch sees a GPU, else the
Reference platform for Systems made only of committee forces (and ``CMMotionRemover``),
else the CPU platform.
"""

from __future__ import annotations

from typing import Any, List

__all__ = ["choose_platform", "check_platform_name", "platform_names", "is_committee_only"]

# Forces whose kernels are the same on the Reference and CPU platforms, or that cost nothing per step.
_PASSIVE_FORCES = ("CMMotionRemover", "PythonForce")


def platform_names() -> List[str]:
    """Names of the OpenMM platforms registered in this process (plugins that loaded)."""
    import openmm

    return [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]


def _is_torch_force(force: Any) -> bool:
    # OpenMM's own forces come back typed; a plugin's force (a TorchForce among them) as the base class Force.
    if type(force).__name__ != "Force":
        return False
    try:
        from advmd.openmm._torch import TorchForce
    except (ImportError, OSError):  # pragma: no cover - openmm-torch missing or broken: no TorchForce runs here
        return False
    return bool(TorchForce.isinstance(force))


def is_committee_only(system: Any) -> bool:
    """Whether every force of ``system`` is a TorchForce, a PythonForce or a CMMotionRemover."""
    for force in system.getForces():
        if type(force).__name__ in _PASSIVE_FORCES:
            continue
        if not _is_torch_force(force):
            return False
    return True


def check_platform_name(name: Any) -> None:
    """Raise ``ValueError`` (listing the platforms here) unless ``name`` is ``"auto"`` or a registered platform."""
    available = platform_names()
    if name != "auto" and (not isinstance(name, str) or name not in available):
        raise ValueError(f"platform must be 'auto' or one of the platforms OpenMM has here {available}, got {name!r}")


def _gpu_platform(available: List[str]) -> str:
    """``CUDA`` when OpenMM has the CUDA platform and PyTorch sees a GPU (a TorchForce then runs the model there)."""
    import torch

    if "CUDA" in available and torch.cuda.is_available():
        return "CUDA"
    return ""


def choose_platform(system: Any, name: str = "auto") -> Any:
    """The OpenMM ``Platform`` to run ``system`` on.

    Parameters
    ----------
    system : openmm.System
    name : str
        A platform name (``Reference``, ``CPU``, ``CUDA``, ``OpenCL``) to use as given, or
        ``"auto"``: CUDA where OpenMM has it and PyTorch sees a GPU; otherwise Reference if
        every force is a committee force (TorchForce or PythonForce) or a CMMotionRemover,
        since those forces run the same kernels on both CPU-side platforms and the Reference
        platform's steps cost less; otherwise CPU.

    Raises
    ------
    ValueError
        ``name`` is neither ``"auto"`` nor a platform registered here (the message lists them).
    """
    import openmm

    check_platform_name(name)
    if name != "auto":
        return openmm.Platform.getPlatformByName(name)
    available = platform_names()
    chosen = _gpu_platform(available)
    if not chosen:
        chosen = "Reference" if is_committee_only(system) or "CPU" not in available else "CPU"
    return openmm.Platform.getPlatformByName(chosen)
