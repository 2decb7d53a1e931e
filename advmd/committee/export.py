"""The TorchScript boundary: export a committee potential to one file, read it back.

An exported file is a ``torch.jit.save`` archive of a scripted
:class:`~advmd.committee.potential.CommitteePotential` plus a JSON metadata
record in its ``_extra_files`` (``advmd_metadata.json``): species, cutoff,
units, committee size, architecture, bias form and default strength, dtype,
torch and advmd versions, export date. :func:`read_metadata` reads that record
straight from the zip archive, without loading or running the model.
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from advmd._io import durable_replace
from advmd.errors import ModelFileError

__all__ = [
    "export_committee",
    "read_metadata",
    "load_committee",
    "load_trainable_committee",
    "load_inference_committee",
    "METADATA_FILE",
    "FORMAT_VERSION",
]

METADATA_FILE = "advmd_metadata.json"
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


_ARCHITECTURE_ATTRIBUTES = ("species", "n_members", "n_features", "n_rbf", "n_interactions", "cutoff")
# Constructor arguments of each advmd committee class, read as attributes from a scripted module.
_CLASS_ATTRIBUTES = {
    "SchNetCommittee": _ARCHITECTURE_ATTRIBUTES,
    "CoordinateMLPCommittee": ("n_atoms", "species", "n_members", "hidden", "dimensions"),
}
_BIAS_ATTRIBUTES = ("n_members", "width", "epsilon")


def model_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype a committee computes in: its first floating parameter's, else its first floating buffer's.

    A committee of scripted members that keep their weights in buffers has no parameters; its positions must
    not be rounded to float32 for that. float32 only when the module holds no floating tensor at all.
    """
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _attributes(module: torch.nn.Module, names: Tuple[str, ...]) -> Dict[str, Any]:
    found: Dict[str, Any] = {}
    for name in names:
        if hasattr(module, name):
            value = getattr(module, name)
            found[name] = [int(v) for v in value] if isinstance(value, (list, tuple)) else value
    return found


def _build_metadata(potential: torch.nn.Module, default_strength: float, extra: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    import advmd

    committee = potential.committee
    bias = potential.bias
    committee_class = getattr(committee, "original_name", None) if isinstance(committee, torch.jit.ScriptModule) else None
    committee_class = committee_class or committee.__class__.__name__
    # Read attributes, not methods: a loaded ScriptModule keeps attributes only.
    if isinstance(committee, torch.jit.ScriptModule) or not hasattr(committee, "hyperparameters"):
        hyper = _attributes(committee, _CLASS_ATTRIBUTES.get(committee_class, _ARCHITECTURE_ATTRIBUTES))
    else:
        hyper = committee.hyperparameters()
    species = [int(z) for z in potential.species]
    if not species:
        raise ValueError("export: the committee lists no species")
    if not potential.cutoff > 0 and committee_class == "SchNetCommittee":
        raise ValueError(f"export: cutoff must be > 0 Angstrom, got {potential.cutoff}")
    dtype = str(model_dtype(potential)).replace("torch.", "")
    metadata: Dict[str, Any] = {
        "format": "advmd-committee",
        "format_version": FORMAT_VERSION,
        "species": species,
        "cutoff": float(potential.cutoff),
        "units": {"length": "Angstrom", "energy": "eV", "forces": "eV/Angstrom"},
        "n_members": int(potential.n_members),
        "architecture": {"class": committee_class, "hyperparameters": hyper},
        "statistics": {
            "sigma_e2": "paper Eq. 5, sample variance, divisor M-1",
            "sigma_f2": "paper Eq. 7, sample variance, divisor M-1, mean over 3N components",
            "max_force_deviation": "DP-GEN max_i RMS deviation of atomic force vectors, divisor M",
        },
        "bias": {
            "form": bias.form,
            "parameters": _attributes(bias, _BIAS_ATTRIBUTES),
            "strength_unit": bias.strength_unit,
            "default_strength": float(default_strength),
            "uses_energy_uncertainty": bool(bias.uses_energy_uncertainty),
            "uses_force_uncertainty": bool(bias.uses_force_uncertainty),
        },
        "dtype": dtype,
        "torch_version": torch.__version__,
        "advmd_version": advmd.__version__,
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if extra:
        overlap = set(extra) & set(metadata)
        if overlap:
            raise ValueError(f"export: extra_metadata may not override reserved keys {sorted(overlap)}")
        metadata.update(extra)
    return metadata


def export_committee(
    potential: torch.nn.Module,
    path: PathLike,
    default_strength: float = 0.0,
    extra_metadata: Optional[Dict[str, Any]] = None,
    tabulate: Optional[float] = None,
) -> Path:
    """Script and save a committee potential with its metadata in one file.

    Parameters
    ----------
    potential : CommitteePotential (eager or scripted)
    path : str or path-like
        Destination; written atomically (a crash never leaves half a file).
    default_strength : float
        Bias strength a new OpenMM force starts with, in the bias's own unit
        (eV for ``udd``, Angstrom for ``hal``).
    extra_metadata : dict, optional
        JSON-serialisable additions (e.g. a calibrated uncertainty threshold).
    tabulate : float, optional, unit Angstrom
        Write the fast inference form of a SchNet committee, its filters from quintic
        tables with this knot spacing (see
        :meth:`~advmd.committee.SchNetCommittee.tabulated`; 0.025 is a good value). The
        metadata records the spacing; :func:`load_trainable_committee` still returns the
        exact, trainable model.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> from advmd.committee import SchNetCommittee, CommitteePotential  # doctest: +SKIP
    >>> export_committee(CommitteePotential(SchNetCommittee([1, 8])), "water.pt")  # doctest: +SKIP
    """
    import math

    if not (isinstance(default_strength, (int, float)) and math.isfinite(default_strength)):
        raise ValueError(f"export: default_strength must be a finite number, got {default_strength!r}")
    if potential.bias.form in ("udd", "hal") and default_strength < 0:
        raise ValueError(f"export: default_strength must be >= 0 for bias form {potential.bias.form!r}, got {default_strength}")
    if tabulate is not None:
        committee = getattr(potential, "committee", None)
        if isinstance(potential, torch.jit.ScriptModule) or not hasattr(committee, "tabulated"):
            raise ValueError("export: tabulate needs the eager CommitteePotential of a SchNetCommittee")
        if not getattr(committee, "uses_tables", False):
            import copy

            potential = copy.copy(potential)  # a shallow copy: the caller's potential keeps its exact committee
            potential._modules = dict(potential._modules)
            potential._modules["committee"] = committee.tabulated(tabulate)
    metadata = _build_metadata(potential, default_strength, extra_metadata)
    if getattr(potential.committee, "uses_tables", False):
        metadata["tabulated"] = {"filters": "quintic Hermite", "spacing_angstrom": float(potential.committee.table_spacing)}
    scripted = potential if isinstance(potential, torch.jit.ScriptModule) else torch.jit.script(potential)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        torch.jit.save(scripted, tmp, _extra_files={METADATA_FILE: json.dumps(metadata, indent=2, sort_keys=True)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        durable_replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Metadata of an exported committee, read from the archive without loading the model.

    Raises
    ------
    ModelFileError
        The file is missing, not a TorchScript zip archive, or has no advmd metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"model file {str(path)!r} does not exist; train one with advmd train "
            "(or export one with advmd.committee.export_committee)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + METADATA_FILE)]
            if not names:
                raise ModelFileError(
                    f"model file {str(path)!r} has no {METADATA_FILE}; it was not written by advmd's export_committee"
                )
            metadata = json.loads(archive.read(names[0]).decode("utf-8"))
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"model file {str(path)!r} is corrupt or not a TorchScript archive; re-export it") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"model file {str(path)!r} has unreadable metadata; re-export it") from error
    if metadata.get("format") != "advmd-committee":
        raise ModelFileError(f"model file {str(path)!r}: metadata format {metadata.get('format')!r} is not 'advmd-committee'")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"model file {str(path)!r} has format_version {metadata['format_version']}, newer than this advmd "
            f"understands ({FORMAT_VERSION}); upgrade advmd"
        )
    return metadata


def load_committee(
    path: PathLike, map_location: Union[str, torch.device] = "cpu"
) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load an exported committee potential and its metadata.

    Returns
    -------
    module : torch.jit.ScriptModule
        The scripted :class:`CommitteePotential`.
    metadata : dict
    """
    metadata = read_metadata(path)
    try:
        module = torch.jit.load(str(path), map_location=map_location)
    except Exception as error:
        raise ModelFileError(f"model file {str(path)!r} could not be loaded by TorchScript; re-export it") from error
    return module, metadata


def load_trainable_committee(path: PathLike) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """An exported advmd committee as a plain (eager, trainable) module, and its metadata.

    Training, fine-tuning and attacks need the Python module (its ``atomic_energies``
    and parameters), not the frozen TorchScript potential. Works for
    :class:`SchNetCommittee` and :class:`CoordinateMLPCommittee` files.
    """
    from advmd.committee.mlp import CoordinateMLPCommittee
    from advmd.committee.schnet import SchNetCommittee

    classes = {"SchNetCommittee": SchNetCommittee, "CoordinateMLPCommittee": CoordinateMLPCommittee}
    module, metadata = load_committee(path)
    architecture = metadata.get("architecture", {})
    if architecture.get("class") not in classes:
        raise ModelFileError(
            f"model file {str(path)!r} holds a {architecture.get('class')!r} committee; this step needs an advmd "
            f"committee ({', '.join(classes)}), e.g. one trained with 'advmd train'"
        )
    committee = classes[architecture["class"]](**architecture["hyperparameters"]).to(getattr(torch, metadata["dtype"]))
    committee.load_state_dict(exact_state_dict(module.committee))
    return committee, metadata


def load_inference_committee(path: PathLike) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """An exported committee as an eager module computing what the file computes.

    Like :func:`load_trainable_committee`, but a file written with ``tabulate`` gives the
    tabulated committee (same spacing), so batched MD and attacks evaluate the same
    function as the file's TorchScript potential in OpenMM or LAMMPS. For training, use
    :func:`load_trainable_committee`.
    """
    committee, metadata = load_trainable_committee(path)
    spacing = (metadata.get("tabulated") or {}).get("spacing_angstrom")
    if spacing is not None:
        committee = committee.tabulated(float(spacing))
    return committee, metadata


def exact_state_dict(committee: torch.nn.Module) -> Dict[str, Any]:
    """The weights of a (possibly scripted, possibly tabulated) committee, without filter tables."""
    return {k: v for k, v in committee.state_dict().items() if k not in ("filter_table", "member_table")}
