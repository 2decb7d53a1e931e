"""OpenMM forces for an advmd committee: the one place that builds OpenMM forces.

Two paths run the same committee potential:

``backend="torch"``
    openmm-torch's ``TorchForce`` with a scripted module that returns energy
    and forces itself (``setOutputsForces(True)``). Runs on every platform
    openmm-torch supports (Reference, CPU, CUDA, OpenCL).
``backend="python"``
    OpenMM's core ``PythonForce`` calling the committee from Python. No plugin
    needed; the model may live on any torch device.

Units are converted here and only here: OpenMM hands nm and takes kJ/mol and
kJ/mol/nm; the committee works in Angstrom and eV.

Global parameters (names carry a prefix, default ``advmd_``):

``<prefix>bias_strength``
    The bias strength in OpenMM units: kJ/mol for ``udd`` (its ``A``), nm for
    ``hal`` (its ``tau``), unconverted for a custom bias with
    ``strength_unit="none"``. Change it during a run with
    ``context.setParameter(name, value)``; nothing is rebuilt.

Reading the uncertainty without a second model evaluation
----------------------------------------------------------
On the torch path the force declares five more global parameters that are
always zero, ``<prefix>sigma_energy``, ``<prefix>sigma_force``,
``<prefix>max_force_deviation``, ``<prefix>max_deviation_atom`` and
``<prefix>bias_energy``, and adds ``p * statistic`` (detached) to its energy.
The energy is unchanged (p = 0), and OpenMM's *energy parameter derivative*
``dE/dp`` equals the statistic. ``context.getState(parameterDerivatives=True)``
therefore returns the committee statistics of the **same** evaluation that
produced the energy and forces; a reporter that adds ``"parameterDerivatives"``
to its ``include`` list gets them in the Simulation's one ``getState`` call.
On the Python path the computation keeps the statistics of its last
evaluation. :func:`read_uncertainty` hides the difference.

Reported values are in OpenMM units: sigma_E in kJ/mol (square root of Eq. 5),
sigma_F in kJ/mol/nm (square root of Eq. 7), the DP-GEN max force deviation in
kJ/mol/nm with the index (in the topology) of the atom carrying it, and the
bias energy in kJ/mol.
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from advmd import units
from advmd.committee.export import load_committee, model_dtype
from advmd.committee.neighbors import check_cell
from advmd.errors import TopologyMismatchError
from advmd.performance import tune_allocator

logger = logging.getLogger(__name__)

__all__ = [
    "use_simple_executor",
    "create_committee_force",
    "add_committee_force",
    "create_system",
    "read_uncertainty",
    "Uncertainty",
    "parameter_names",
    "BACKENDS",
]

BACKENDS = ("torch", "python")
STATISTICS = ("sigma_energy", "sigma_force", "max_force_deviation", "max_deviation_atom", "bias_energy")
_STRENGTH_FACTORS = {
    "energy": units.KJ_PER_MOL_TO_EV,
    "length": units.NM_TO_ANGSTROM,
    "none": 1.0,
}


def use_simple_executor(enabled: bool = True) -> bool:
    """Run TorchScript (process-wide) without profiling: every call runs one fixed, unoptimised graph.

    The default profiling executor re-optimises a scripted model after some calls, and the
    optimised graph rounds differently. A simulation restarted from a checkpoint then
    diverges from the uninterrupted run (float32 models, in the 7th digit within tens of
    steps). Without profiling, every call runs the same graph (built on the first call),
    so restarts are bitwise reproducible, and gradients come from the operators' own
    autograd formulas, as in eager PyTorch.

    This turns off the profiling *mode* and keeps the profiling *executor*, which then
    runs its fallback graph. (Until 2026-12 advmd turned the profiling executor off, which
    selects TorchScript's legacy executor: just as reproducible, but it rewrites models into
    autodiff subgraphs. Measured on the benchmark committee with a sigma_F bias at 22 atoms:
    first call 610-730 ms against 53-67 ms now, peak memory about 50 MB higher; later calls
    equally fast.)
    ``advmd md`` calls this; call it in your own script before running MD if you need
    the same guarantee. It affects every TorchScript module of the process, from its
    first call on: a model already run under the profiling executor keeps its optimised
    graph, so call this before loading and running a model.

    Returns
    -------
    bool
        Whether the simple executor was in use before (pass it back to restore). ``False``
        restores TorchScript's default (the profiling executor in profiling mode); a process
        that had selected the legacy executor itself gets the default back, not the legacy one.
    """
    was_profiling = torch._C._jit_set_profiling_mode(not enabled)
    was_profiling_executor = torch._C._jit_set_profiling_executor(True)
    return not (was_profiling and was_profiling_executor)


def parameter_names(prefix: str = "advmd_") -> Dict[str, str]:
    """Global parameter names used by a committee force with this prefix.

    Returns
    -------
    dict
        ``{"bias_strength": ..., "sigma_energy": ..., ...}``
    """
    names = {"bias_strength": prefix + "bias_strength"}
    names.update({stat: prefix + stat for stat in STATISTICS})
    return names


class _OpenMMBoundary(nn.Module):
    """Converts OpenMM inputs to the committee's units and back (shared by both paths)."""

    def __init__(
        self,
        potential: nn.Module,
        atomic_numbers: Tensor,
        atom_indices: Optional[Tensor],
        n_particles: int,
        strength_factor: float,
        bias_only: bool = False,
    ) -> None:
        super().__init__()
        self.potential = potential
        self.bias_only = bool(bias_only)
        self.register_buffer("atomic_numbers", atomic_numbers)
        self.use_subset = atom_indices is not None
        self.register_buffer("atom_indices", atom_indices if atom_indices is not None else torch.zeros(0, dtype=torch.long))
        self.n_particles = int(n_particles)
        self.strength_factor = float(strength_factor)
        self.model_dtype = model_dtype(potential)
        # Unit factors at the boundary (advmd.units), as attributes: TorchScript reads them as constants.
        self.nm_to_angstrom = units.NM_TO_ANGSTROM
        self.ev_to_kjmol = units.EV_TO_KJ_PER_MOL
        self.ev_per_angstrom_to_kjmol_nm = units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM

    def statistics(self, positions_nm: Tensor, box_nm: Optional[Tensor], strength: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Energy (kJ/mol), forces on all particles (kJ/mol/nm) and the 5 statistics (OpenMM units)."""
        positions = positions_nm
        if self.use_subset:
            positions = positions_nm.index_select(0, self.atom_indices)
        positions = positions.to(self.model_dtype) * self.nm_to_angstrom
        cell: Optional[Tensor] = None
        if box_nm is not None:
            cell = box_nm.to(self.model_dtype) * self.nm_to_angstrom
        out = self.potential(positions, self.atomic_numbers, cell, (strength * self.strength_factor).to(self.model_dtype))
        # no_grad, not detach(): torch.jit.freeze (applied by openmm-torch) removes detach() calls,
        # and the returned energy must carry no graph back into the model.
        with torch.no_grad():
            if self.bias_only:  # the bias alone, on top of another potential of the System
                energy = out["bias_energy"].to(torch.float64) * self.ev_to_kjmol
                forces = (out["forces"] - out["mean_forces"]).to(torch.float64) * self.ev_per_angstrom_to_kjmol_nm
            else:
                energy = out["energy"].to(torch.float64) * self.ev_to_kjmol
                forces = out["forces"].to(torch.float64) * self.ev_per_angstrom_to_kjmol_nm
            if self.use_subset:
                full = torch.zeros((self.n_particles, 3), dtype=torch.float64, device=forces.device)
                forces = full.index_copy(0, self.atom_indices, forces)
            atom = out["max_deviation_atom"]
            if self.use_subset:
                atom = self.atom_indices[atom]
            stats = torch.stack(
                [
                    torch.sqrt(out["sigma_e2"].to(torch.float64)) * self.ev_to_kjmol,
                    torch.sqrt(out["sigma_f2"].to(torch.float64)) * self.ev_per_angstrom_to_kjmol_nm,
                    out["max_force_deviation"].to(torch.float64) * self.ev_per_angstrom_to_kjmol_nm,
                    atom.to(torch.float64),
                    out["bias_energy"].to(torch.float64) * self.ev_to_kjmol,
                ]
            )
        return energy, forces, stats

    def with_probes(self, energy: Tensor, stats: Tensor, p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor) -> Tensor:
        probes = torch.stack([p0, p1, p2, p3, p4]).to(stats.dtype)
        return energy + (probes * stats).sum()


class _CachedBoundary(_OpenMMBoundary):
    """The TorchForce modules' base: keeps the inputs and outputs of the last evaluation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache_positions = torch.zeros(0, dtype=torch.float64)
        self.cache_box = torch.zeros(0, dtype=torch.float64)
        self.cache_strength = torch.zeros(0, dtype=torch.float64)
        self.cache_energy = torch.zeros(0, dtype=torch.float64)
        self.cache_forces = torch.zeros(0, dtype=torch.float64)
        self.cache_stats = torch.zeros(0, dtype=torch.float64)
        #: Model evaluations (calls whose inputs differed from the last), for tests and diagnostics.
        self.evaluations = torch.zeros(1, dtype=torch.long)

    def cache_hit(self, positions_nm: Tensor, box_nm: Optional[Tensor], strength: Tensor) -> bool:
        """Whether every input equals, value by value, that of the last evaluation (whose results are kept).

        A reporter's ``getState`` with energy or parameter derivatives calls every force at the
        positions a step has just produced, and the integrator's next step calls them again at the
        same positions (it computes forces at the start of a step); openmm-torch keeps no result
        between calls, so without this a reporter at every step doubles the cost of a run. The key
        is the whole input (positions, box, strength; the weights are constants), so a hit returns
        the result of an evaluation at exactly these inputs. A bias that is not a pure function of
        its inputs (a custom bias keeping state) would break this; the built-in ones are pure.

        The forward methods test and branch themselves rather than through a helper that returns
        early: with such a helper, torch 2.9 segfaults building the message of an error raised
        (NaN positions) in a later frozen copy of the module (openmm-torch loads and freezes one per
        Context). Seen in the test suite's NaN test and reproduced in a standalone script; whether it
        strikes depends on memory layout, so no test can show its absence reliably.
        """
        with torch.no_grad():
            return (
                self.cache_positions.device == positions_nm.device
                and self.cache_positions.shape == positions_nm.shape
                and torch.equal(positions_nm, self.cache_positions)
                and torch.equal(strength, self.cache_strength)
                and (box_nm is None or torch.equal(box_nm, self.cache_box))
            )

    def remember(
        self, positions_nm: Tensor, box_nm: Optional[Tensor], strength: Tensor, energy: Tensor, forces: Tensor, stats: Tensor
    ) -> None:
        """Keep copies of an evaluation's inputs and outputs (the caller may change what it gets)."""
        with torch.no_grad():
            self.cache_positions = positions_nm.clone()
            self.cache_strength = strength.clone()
            if box_nm is not None:
                self.cache_box = box_nm.clone()
            self.cache_energy = energy.clone()
            self.cache_forces = forces.clone()
            self.cache_stats = stats.clone()
            self.evaluations += 1


class _TorchForceModule(_CachedBoundary):
    """Scripted module for ``TorchForce`` without periodic boundaries."""

    def forward(
        self, positions: Tensor, strength: Tensor, p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor
    ) -> Tuple[Tensor, Tensor]:
        if self.cache_hit(positions, None, strength):
            energy, forces, stats = self.cache_energy.clone(), self.cache_forces.clone(), self.cache_stats.clone()
        else:
            energy, forces, stats = self.statistics(positions, None, strength)
            self.remember(positions, None, strength, energy, forces, stats)
        return self.with_probes(energy, stats, p0, p1, p2, p3, p4), forces


class _PeriodicTorchForceModule(_CachedBoundary):
    """Scripted module for ``TorchForce`` with periodic boundaries."""

    def forward(
        self, positions: Tensor, box: Tensor, strength: Tensor, p0: Tensor, p1: Tensor, p2: Tensor, p3: Tensor, p4: Tensor
    ) -> Tuple[Tensor, Tensor]:
        if self.cache_hit(positions, box, strength):
            energy, forces, stats = self.cache_energy.clone(), self.cache_forces.clone(), self.cache_stats.clone()
        else:
            energy, forces, stats = self.statistics(positions, box, strength)
            self.remember(positions, box, strength, energy, forces, stats)
        return self.with_probes(energy, stats, p0, p1, p2, p3, p4), forces


class _PythonForceModule(_OpenMMBoundary):
    """Scripted module for ``PythonForce`` (``box`` None without periodicity).

    Returns one float64 vector: energy (kJ/mol), the 5 statistics, then the forces (kJ/mol/nm) row by row,
    so the Python callback converts a single tensor (each conversion costs tens of microseconds per step).
    """

    def forward(self, positions: Tensor, box: Optional[Tensor], strength: Tensor) -> Tensor:
        energy, forces, stats = self.statistics(positions, box, strength)
        return torch.cat([energy.view(1), stats, forces.reshape(-1)])


# Python path: every live computation, held weakly (the PythonForce holds the strong reference).
# Several may share a force name (a System copied through XmlSerializer carries an unpickled copy),
# so the readout picks the one whose evaluation counter advanced.
_COMPUTATIONS: "weakref.WeakSet[CommitteeComputation]" = weakref.WeakSet()
_COUNTER = itertools.count()
_LOCK = threading.Lock()


class CommitteeComputation:
    """The callable a ``PythonForce`` runs: committee energy and forces in OpenMM units.

    Keeps the statistics of its last evaluation in :attr:`last` (OpenMM units), and,
    while :attr:`history` is a deque (``start_recording``), one record per evaluation:
    ``(step, time_ps, energy_kjmol, statistics, strength)`` with the five statistics as
    in :attr:`last`. Picklable (the scripted module travels as bytes), so the force can
    be serialised with ``XmlSerializer``.
    """

    #: Records kept at most between two drains (about 50 MB); older ones are dropped.
    HISTORY_LIMIT = 200_000

    def __init__(
        self,
        boundary: nn.Module,
        strength_name: str,
        periodic: bool,
        device: Union[str, torch.device] = "cpu",
        name: str = "",
        portable: Optional[torch.jit.ScriptModule] = None,
    ) -> None:
        self.boundary = boundary
        #: For a compiled boundary (``compile=True``), the scripted module it was made from: what pickling saves.
        self.portable = portable
        self.strength_name = strength_name
        self.periodic = periodic
        self.device = torch.device(device)
        self.name = name
        self._last_values: Optional[np.ndarray] = None
        self._strength_cache: Optional[Tuple[float, Tensor]] = None
        self._last_evaluation: Optional[Tuple[np.ndarray, float, Optional[np.ndarray], np.ndarray]] = None
        self.calls = 0
        #: Model evaluations (calls with new inputs); ``calls`` counts every call.
        self.evaluations = 0
        self.keep_alive: Any = None
        self.history: Optional[Deque[Tuple[int, float, float, np.ndarray, float]]] = None
        _COMPUTATIONS.add(self)

    def start_recording(self) -> None:
        """Record every evaluation from now on (idempotent); :meth:`drain` hands the records over."""
        if self.history is None:
            # HISTORY_LIMIT steps between two drains, plus the step the first period starts at (step 0).
            self.history = deque(maxlen=self.HISTORY_LIMIT + 1)

    def drain(self) -> List[Tuple[int, float, float, np.ndarray, float]]:
        """The records since the last drain, oldest first."""
        if not self.history:
            return []
        records = list(self.history)
        self.history.clear()
        return records

    @property
    def last(self) -> Optional[Dict[str, float]]:
        """The five statistics of the last evaluation (OpenMM units), or None before the first."""
        values = self._last_values
        if values is None:
            return None
        last = {stat: float(v) for stat, v in zip(STATISTICS, values)}
        last["max_deviation_atom"] = int(values[3])
        return last

    def _positions(self, state: Any) -> np.ndarray:
        """The State's positions (nm) as a float64 array, read straight into a fresh array.

        ``State.getPositions(asNumpy=True)`` lists the State's attributes (``dir``) and wraps the array in a
        Quantity: about 4% of a 22-atom committee step. OpenMM 8 fills an array directly; the public call
        is the fallback.
        """
        import openmm

        try:
            array = np.empty((state._getNumParticles(), 3), dtype=np.float64)
            state._getVectorAsNumpy(openmm.State.Positions, array)
        except AttributeError:  # pragma: no cover - an OpenMM without the array accessor
            array = np.asarray(state.getPositions(asNumpy=True)._value, dtype=np.float64)
        return array

    def _strength(self, value: float) -> Tensor:
        """The strength as a tensor, rebuilt only when its value changes (a new tensor each step costs time)."""
        cached = self._strength_cache
        if cached is None or cached[0] != value:
            cached = (value, torch.tensor(value, dtype=torch.float64, device=self.device))
            self._strength_cache = cached
        return cached[1]

    def __call__(self, state: Any) -> Tuple[float, np.ndarray]:
        positions = self._positions(state)
        strength_value = float(state.getParameters()[self.strength_name])
        box_array: Optional[np.ndarray] = None
        if self.periodic:
            box_array = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value, dtype=np.float64)
        # A reporter's getState and the next step's force computation call the force at the same positions:
        # equal inputs give the kept result (see _CachedBoundary.cache_hit).
        cached = self._last_evaluation
        if (
            cached is not None
            and cached[1] == strength_value
            and np.array_equal(cached[0], positions)
            and (box_array is None or np.array_equal(cached[2], box_array))
        ):
            packed = cached[3]
        else:
            box = None if box_array is None else torch.from_numpy(box_array).to(self.device)
            result = self.boundary(torch.from_numpy(positions).to(self.device), box, self._strength(strength_value))
            if isinstance(result, tuple):  # a module saved by advmd before 2026-12-02 (energy, forces, statistics)
                energy, forces, stats = result
                result = torch.cat([energy.view(1), stats, forces.reshape(-1)])
            packed = result.detach().cpu().numpy()
            self._last_evaluation = (positions, strength_value, box_array, packed)
            self.evaluations += 1
        values = packed[1:6].copy()  # a copy: a view would keep every recorded step's forces alive
        self._last_values = values
        self.calls += 1
        energy_value = float(packed[0])
        if self.history is not None:
            record = (int(state.getStepCount()), float(state.getTime()._value), energy_value, values, strength_value)
            if self.history and self.history[-1][0] == record[0]:
                self.history[-1] = record  # another call at the same step (a reporter's): one record a step
            else:
                if len(self.history) == self.history.maxlen:
                    logger.warning(
                        "%s: more than %d steps recorded without a drain; the oldest are dropped (report more often)",
                        self.name,
                        self.HISTORY_LIMIT,
                    )
                self.history.append(record)
        return energy_value, packed[6:].reshape(-1, 3).copy()

    def __getstate__(self) -> Dict[str, Any]:
        buffer = io.BytesIO()
        torch.jit.save(self.portable if self.portable is not None else self.boundary, buffer)
        return {
            "boundary": buffer.getvalue(),
            "strength_name": self.strength_name,
            "periodic": self.periodic,
            "device": str(self.device),
            "name": self.name,
            "compile": self.portable is not None,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        loaded = torch.jit.load(io.BytesIO(state["boundary"]), map_location=state["device"])
        self.portable = None
        self.boundary = loaded
        if state.get("compile", False):  # a copy of a compiled force is compiled too
            self.portable = loaded
            self.boundary = _compiled_boundary(loaded, state["device"])
        self.strength_name = state["strength_name"]
        self.periodic = state["periodic"]
        self.device = torch.device(state["device"])
        self.name = state.get("name", "")  # OpenMM segfaults if unpickling raises: be lenient
        self._last_values = None
        self._strength_cache = None
        self._last_evaluation = None
        self.calls = 0
        self.evaluations = 0
        self.keep_alive = None
        self.history = None
        _COMPUTATIONS.add(self)


@dataclass(frozen=True)
class Uncertainty:
    """Committee statistics of one evaluation, in OpenMM units.

    Attributes
    ----------
    sigma_energy : float, unit kJ/mol
        Square root of paper Eq. 5 (divisor M-1).
    sigma_force : float, unit kJ/mol/nm
        Square root of paper Eq. 7 (divisor M-1).
    max_force_deviation : float, unit kJ/mol/nm
        DP-GEN model deviation (divisor M).
    max_deviation_atom : int
        Topology index of the atom carrying ``max_force_deviation``.
    bias_energy : float, unit kJ/mol
    """

    sigma_energy: float
    sigma_force: float
    max_force_deviation: float
    max_deviation_atom: int
    bias_energy: float


def _resolve_model(model: Any) -> Tuple[nn.Module, Dict[str, Any]]:
    """Model path or module -> (scripted potential, metadata-like dict)."""
    if isinstance(model, (str, os.PathLike)):
        return load_committee(model)
    if isinstance(model, nn.Module) and hasattr(model, "committee") and hasattr(model, "bias"):
        bias = model.bias
        info = {
            "species": [int(z) for z in model.species],
            "cutoff": float(model.cutoff),
            "n_members": int(model.n_members),
            "bias": {"form": bias.form, "strength_unit": bias.strength_unit, "default_strength": 0.0},
        }
        scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model)
        return scripted, info
    raise TypeError(f"model must be the path of an exported advmd committee or a CommitteePotential, got {type(model).__name__}")


def _topology_atomic_numbers(topology: Any, atoms: Sequence[int], species: Sequence[int]) -> Tensor:
    topology_atoms = list(topology.atoms())
    known = set(int(z) for z in species)
    numbers = []
    for index in atoms:
        atom = topology_atoms[index]
        if atom.element is None:
            raise TopologyMismatchError(
                f"topology atom {index} ({atom.name} in residue {atom.residue.name}) has no element; "
                "the committee needs elements (virtual sites must be excluded with atoms=...)"
            )
        z = int(atom.element.atomic_number)
        if z not in known:
            raise TopologyMismatchError(
                f"topology atom {index} ({atom.name} in residue {atom.residue.name}) is element "
                f"{atom.element.symbol} (Z={z}), which the committee was not trained on; the model knows "
                f"Z={sorted(known)}. Select the atoms it covers with atoms=..., or train on this element"
            )
        numbers.append(z)
    return torch.tensor(numbers, dtype=torch.long)


def create_committee_force(
    topology: Any,
    model: Any,
    *,
    backend: str = "torch",
    atoms: Optional[Sequence[int]] = None,
    bias_strength: Optional[float] = None,
    parameter_prefix: str = "advmd_",
    periodic: Optional[bool] = None,
    device: Union[str, torch.device] = "cpu",
    bias_only: bool = False,
    compile: bool = False,
) -> Any:
    """Build an OpenMM force that applies the committee mean plus its uncertainty bias.

    Parameters
    ----------
    topology : openmm.app.Topology
    model : str, path-like, or CommitteePotential
        An exported committee file (see :func:`advmd.committee.export_committee`)
        or a potential module.
    backend : {"torch", "python"}
        ``TorchForce`` (openmm-torch) or OpenMM's ``PythonForce``.
    atoms : sequence of int, optional
        Topology indices the committee acts on (default: all atoms).
    bias_strength : float, optional
        Initial strength in OpenMM units (kJ/mol for ``udd``, nm for ``hal``);
        default: the model's exported default.
    parameter_prefix : str
        Prefix of the global parameter names (use distinct prefixes for
        several committee forces in one System).
    periodic : bool, optional
        Default: whether the topology has periodic box vectors.
    device : str or torch.device
        Device of the model on the ``python`` path (the ``torch`` path follows
        the OpenMM platform).
    bias_only : bool
        Apply only the uncertainty bias (energy and forces), not the committee
        mean: the System's other forces (a force field, a reference method) drive
        the dynamics and the committee's disagreement biases them. The readout
        still reports the committee's statistics.
    compile : bool
        ``backend="python"`` only: evaluate the committee through ``torch.compile``
        (:class:`~advmd.committee.compiled.CompiledCommitteePotential`, SchNet committees):
        the same energies and forces to float32 rounding, 0.93x the TorchScript committee's time at
        22 atoms and 0.71x at 3000 on a 2-core CPU, and a first step that compiles for 10-40 s (a C++
        compiler must be installed).
        A ``sigma_F`` bias (HAL) gains only in its first pass.

    Returns
    -------
    openmm.Force
        A ``TorchForce`` or ``PythonForce`` named ``<prefix>committee``.

    Notes
    -----
    Calls :func:`advmd.performance.tune_allocator` (glibc keeps large freed
    blocks; 2-4x faster force calls from a few hundred atoms on). Set
    ``ADVMD_TUNE_ALLOCATOR=0`` to opt out.

    Examples
    --------
    >>> from openmm import app
    >>> from advmd.openmm import create_committee_force  # doctest: +SKIP
    >>> force = create_committee_force(app.PDBFile("ala2.pdb").topology, "committee.pt")  # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}")
    if compile and backend != "python":
        raise ValueError(
            f"compile=True needs backend='python', got backend {backend!r}: TorchForce runs the TorchScript module, "
            "and torch.compile's code cannot be scripted"
        )
    if not isinstance(parameter_prefix, str) or not parameter_prefix.replace("_", "").isalnum():
        raise ValueError(f"parameter_prefix must be letters, digits and underscores, got {parameter_prefix!r}")
    tune_allocator()
    potential, info = _resolve_model(model)
    n_particles = topology.getNumAtoms()
    if atoms is None:
        atom_list = list(range(n_particles))
        atom_indices = None
    else:
        atom_list = [int(a) for a in atoms]
        if not atom_list:
            raise ValueError("atoms is empty; give the topology indices the committee acts on, or None for all")
        bad = [a for a in atom_list if a < 0 or a >= n_particles]
        if bad:
            raise TopologyMismatchError(f"atoms contains indices {bad[:5]} outside the topology's 0..{n_particles - 1}")
        if len(set(atom_list)) != len(atom_list):
            raise ValueError("atoms contains repeated indices; list each atom once")
        atom_indices = torch.tensor(atom_list, dtype=torch.long)
    atomic_numbers = _topology_atomic_numbers(topology, atom_list, info["species"])

    bias_info = info.get("bias", {})
    unit_kind = bias_info.get("strength_unit", "none")
    form = bias_info.get("form", "none")
    if bias_strength is None:
        model_strength = float(bias_info.get("default_strength", 0.0))
        bias_strength = model_strength / _STRENGTH_FACTORS[unit_kind]
    try:
        bias_strength = float(bias_strength)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bias_strength must be a number, got {bias_strength!r}") from error
    if not math.isfinite(bias_strength):
        raise ValueError(f"bias_strength must be finite, got {bias_strength!r}")
    if form in ("udd", "hal") and bias_strength < 0:
        raise ValueError(f"bias_strength must be >= 0 for bias form {form!r}, got {bias_strength}")

    if periodic is None:
        periodic = topology.getPeriodicBoxVectors() is not None
    if periodic:
        vectors = topology.getPeriodicBoxVectors()
        if vectors is None:
            raise ValueError("periodic=True but the topology has no periodic box vectors; set them first")
        box_nm = [[v.x, v.y, v.z] for v in (vec.value_in_unit(_nm()) for vec in vectors)]
        box = torch.tensor(box_nm, dtype=torch.float64) * units.NM_TO_ANGSTROM
        check_cell(box, float(info["cutoff"]))

    names = parameter_names(parameter_prefix)
    boundary_options = (potential, atomic_numbers, atom_indices, n_particles, _STRENGTH_FACTORS[unit_kind], bias_only)
    if backend == "torch":
        from advmd.openmm._torch import TorchForce

        boundary_cls = _PeriodicTorchForceModule if periodic else _TorchForceModule
        boundary = torch.jit.script(boundary_cls(*boundary_options).eval())
        force = TorchForce(boundary)
        force.setOutputsForces(True)
        force.setUsesPeriodicBoundaryConditions(bool(periodic))
        force.addGlobalParameter(names["bias_strength"], bias_strength)
        for stat in STATISTICS:
            force.addGlobalParameter(names[stat], 0.0)
            force.addEnergyParameterDerivative(names[stat])
    else:
        import openmm

        with _LOCK:
            name = f"{parameter_prefix}committee#{next(_COUNTER)}"
        scripted = torch.jit.script(_PythonForceModule(*boundary_options).eval()).to(device)
        if compile:
            computation = CommitteeComputation(
                _compiled_boundary(scripted, device), names["bias_strength"], bool(periodic), device, name, portable=scripted
            )
        else:
            # Frozen as openmm-torch freezes the TorchForce module (weights become constants: about 4% faster
            # at 22 atoms).
            computation = CommitteeComputation(torch.jit.freeze(scripted), names["bias_strength"], bool(periodic), device, name)
        # A frozen module still runs code of the compilation unit of a loaded (torch.jit.load) potential;
        # keep that alive with the computation (freed too early, the next call segfaults).
        computation.keep_alive = potential
        force = openmm.PythonForce(computation, {names["bias_strength"]: bias_strength})
        force.setUsesPeriodicBoundaryConditions(bool(periodic))
        force.setName(name)
        return force
    force.setName(parameter_prefix + "committee")
    return force


def _compiled_boundary(scripted: torch.jit.ScriptModule, device: Union[str, torch.device]) -> nn.Module:
    """The eager boundary of a scripted (unfrozen) ``_PythonForceModule``, with a compiled committee potential."""
    from advmd.committee.compiled import CompiledCommitteePotential

    atom_indices = scripted.atom_indices if bool(scripted.use_subset) else None
    boundary = _PythonForceModule(
        CompiledCommitteePotential(scripted.potential),
        scripted.atomic_numbers,
        atom_indices,
        int(scripted.n_particles),
        float(scripted.strength_factor),
        bool(scripted.bias_only),
    )
    return boundary.eval().to(device)


def _nm() -> Any:
    from openmm import unit

    return unit.nanometer


def add_committee_force(topology: Any, system: Any, model: Any, **options: Any) -> Any:
    """Create the committee force for ``topology`` and add it to ``system`` (openmm-ml style).

    Validates everything first: on any error the System is left untouched.
    Takes the options of :func:`create_committee_force`.

    Returns
    -------
    openmm.Force
        The added force.
    """
    if system.getNumParticles() != topology.getNumAtoms():
        raise TopologyMismatchError(
            f"the System has {system.getNumParticles()} particles but the topology has "
            f"{topology.getNumAtoms()} atoms; build both from the same structure"
        )
    prefix = options.get("parameter_prefix", "advmd_")
    wanted = set(parameter_names(prefix).values())
    for existing in system.getForces():
        getter = getattr(existing, "getNumGlobalParameters", None)
        taken = set()
        if getter is not None:
            taken = {existing.getGlobalParameterName(k) for k in range(getter())}
        elif hasattr(existing, "getGlobalParameters"):
            taken = set(existing.getGlobalParameters())
        clash = taken & wanted
        # Plugin forces come back from getForces() as plain openmm.Force: compare names too.
        if existing.getName().startswith(prefix + "committee"):
            clash = clash | {parameter_names(prefix)["bias_strength"]}
        if clash:
            raise ValueError(f"the System already has global parameters {sorted(clash)}; pass another parameter_prefix")
    force = create_committee_force(topology, model, **options)
    system.addForce(force)
    # Which atoms the committee acts on, for the reporters (a FrameExtractor stores only those).
    atoms = options.get("atoms")
    registry = getattr(system, "_advmd_committee_atoms", None)
    if registry is None:
        registry = {}
        system._advmd_committee_atoms = registry
    registry[force.getName()] = None if atoms is None else [int(a) for a in atoms]
    return force


def create_system(topology: Any, model: Any, *, remove_cm_motion: bool = True, **options: Any) -> Any:
    """A System of the topology's atoms driven by the committee alone.

    Masses come from the topology's elements. Takes the options of
    :func:`create_committee_force`; periodic box vectors are copied from the topology.

    Examples
    --------
    >>> from openmm import app
    >>> from advmd.openmm import create_system  # doctest: +SKIP
    >>> system = create_system(app.PDBFile("ala2.pdb").topology, "committee.pt", bias_strength=1.0)  # doctest: +SKIP
    """
    import openmm

    system = openmm.System()
    for atom in topology.atoms():
        if atom.element is None:
            raise TopologyMismatchError(f"topology atom {atom.index} ({atom.name}) has no element, so no mass")
        system.addParticle(atom.element.mass)
    vectors = topology.getPeriodicBoxVectors()
    if vectors is not None:
        system.setDefaultPeriodicBoxVectors(*vectors)
    if remove_cm_motion:
        system.addForce(openmm.CMMotionRemover())
    add_committee_force(topology, system, model, **options)
    return system


def _find_committee_forces(system: Any, prefix: Optional[str]) -> List[Any]:
    found = []
    for force in system.getForces():
        name = force.getName()
        if "committee" not in name:
            continue
        if prefix is not None and not name.startswith(prefix + "committee"):
            continue
        found.append(force)
    return found


def read_uncertainty(
    context: Any, parameter_prefix: Optional[str] = None, state: Any = None, evaluate: bool = True
) -> Uncertainty:
    """Committee statistics at the context's current positions.

    Parameters
    ----------
    context : openmm.Context or openmm.app.Simulation
    parameter_prefix : str, optional
        Which committee force (needed only when a System holds several).
    state : openmm.State, optional
        A state obtained with ``parameterDerivatives=True`` (torch path): its
        values are used directly, without evaluating anything.
    evaluate : bool
        Python path: with ``False``, return the statistics of the force's last
        evaluation (e.g. the Simulation's own ``getState`` for its reporters)
        instead of evaluating the force group now.

    Returns
    -------
    Uncertainty

    Notes
    -----
    Torch path: one ``getState(parameterDerivatives=True)`` call of the force, or none
    if ``state`` is given. Python path: one energy call of the committee's force
    group; its statistics are kept by the computation. Neither evaluates the model
    when the force has just evaluated the current positions (it keeps its last result).
    """
    context = getattr(context, "context", context)
    system = context.getSystem()
    forces = _find_committee_forces(system, parameter_prefix)
    if not forces:
        raise ValueError(
            "the System has no advmd committee force" + (f" with prefix {parameter_prefix!r}" if parameter_prefix else "")
        )
    if len(forces) > 1:
        raise ValueError(f"the System has {len(forces)} committee forces; pass parameter_prefix to choose one")
    force = forces[0]
    name = force.getName()
    if "#" in name:  # python path
        candidates = {c: c.calls for c in list(_COMPUTATIONS) if c.name == name}
        if not evaluate:
            last = [c for c in candidates if c.last is not None]
            if len(last) == 1:
                return Uncertainty(**last[0].last)
        context.getState(energy=True, groups={force.getForceGroup()})
        evaluated = [c for c, calls in candidates.items() if c.calls != calls]
        if len(evaluated) != 1 or evaluated[0].last is None:
            raise RuntimeError(f"could not identify the Python computation of force {name!r} in this process")
        return Uncertainty(**evaluated[0].last)
    prefix = name[: -len("committee")]
    names = parameter_names(prefix)
    if state is None:
        state = context.getState(parameterDerivatives=True, groups={force.getForceGroup()})
    derivatives = state.getEnergyParameterDerivatives()
    values = {stat: float(derivatives[names[stat]]) for stat in STATISTICS}
    values["max_deviation_atom"] = int(round(values["max_deviation_atom"]))
    return Uncertainty(**values)
