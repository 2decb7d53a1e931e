"""An exported advmd committee in LAMMPS through ``fix external`` (route 1: pure Python, any LAMMPS build).

:class:`CommitteeFix` installs ``fix <id> all external pf/callback 1 1`` and a Python
callback that, every step, gathers all positions (``gather_atoms``, so it is correct under
MPI: every rank evaluates the same committee on the whole system and keeps the forces of
its own atoms), evaluates the committee with its uncertainty bias, and sets

* the forces on the local atoms;
* the energy (``fix_modify <id> energy yes``: the committee energy is part of ``pe``);
* the global virial (``fix_modify <id> virial yes``): ``sum_i r_i (x) F_i`` for open
  boundaries, the strain derivative ``-dE/d epsilon`` for periodic cells;
* a global vector, readable as ``f_<id>[k]`` in thermo output, variables and ``fix halt``:

  ====  ==========================================================  ============
  k     value                                                       unit
  ====  ==========================================================  ============
  1     sigma_E (paper Eq. 5, divisor M-1)                          energy
  2     sigma_F (Eq. 7, divisor M-1)                                force
  3     max per-atom force deviation (DP-GEN, divisor M)            force
  4     atom ID with the largest deviation                          --
  5     bias energy                                                 energy
  6     bias strength in use                                        energy (UDD) or distance (HAL)
  ====  ==========================================================  ============

  LAMMPS does not sum a fix's energy, virial or vector over ranks, so every rank sets
  the totals. The vector is flagged extensive by ``fix external``: with ``thermo_modify
  norm yes`` thermo output divides it by the atom count, so keep ``norm no`` (the
  default of ``units metal`` and ``real``) when thresholds apply to it.

Errors: LAMMPS' callback wrapper ignores Python exceptions, so a failing callback zeroes
its forces and sets vector entry 7, and a ``fix halt`` on it stops the run with an error;
:meth:`CommitteeFix.run` then raises the cause. Every rank evaluates the same committee on
the same positions, so a failure is normally seen on all ranks together.

Units: LAMMPS ``metal`` (Angstrom, eV: the model's own) and ``real`` (Angstrom,
kcal/mol) are supported; conversions go through :mod:`advmd.units`.

Bias strength: an equal-style LAMMPS variable (default name ``advmd_bias_strength``) is
read at every step when it exists, so ``variable advmd_bias_strength equal ramp(0,0.5)``
or redefining it between ``run`` commands changes the bias during a run; otherwise the
``bias_strength`` given to the constructor is used. The strength is in LAMMPS units:
energy for UDD's amplitude A, distance (Angstrom) for HAL's tau.

Examples
--------
>>> from advmd.lammps import import_lammps, CommitteeFix
>>> lammps = import_lammps()  # doctest: +SKIP
>>> lmp = lammps.lammps(cmdargs=["-log", "none"])  # doctest: +SKIP
>>> lmp.file("alanine.in")  # units metal, read_data ...  # doctest: +SKIP
>>> fix = CommitteeFix(lmp, "committee.pt", types=["H", "C", "N", "O"])  # doctest: +SKIP
>>> lmp.command("thermo_style custom step temp pe f_advmd[2] f_advmd[3]")  # doctest: +SKIP
>>> lmp.command("fix stop all halt 10 v_dev > 0.5 error soft")  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from advmd import units

logger = logging.getLogger(__name__)

__all__ = ["CommitteeFix", "LAMMPS_UNITS", "VECTOR_LABELS"]

#: LAMMPS unit styles advmd converts: energy unit per eV; lengths are Angstrom in both.
LAMMPS_UNITS: Dict[str, float] = {"metal": 1.0, "real": units.EV_TO_KCAL_PER_MOL}

VECTOR_LABELS: List[str] = [
    "sigma_energy",
    "sigma_force",
    "max_force_deviation",
    "max_deviation_atom_id",
    "bias_energy",
    "bias_strength",
]


def _atomic_numbers(types: Sequence[Union[str, int]]) -> List[int]:
    from ase.data import atomic_numbers

    out = []
    for k, entry in enumerate(types):
        if isinstance(entry, (int, np.integer)):
            out.append(int(entry))
        elif entry in atomic_numbers:
            out.append(int(atomic_numbers[entry]))
        else:
            raise ValueError(f"types[{k}] = {entry!r} is not an element symbol or atomic number (LAMMPS type {k + 1})")
    return out


class CommitteeFix:
    """Attach an exported committee to a LAMMPS instance (``fix external``, Python callback).

    Parameters
    ----------
    lmp : lammps.lammps
        A LAMMPS instance whose box and atoms exist (after ``read_data`` or ``create_atoms``).
    model : path-like or torch.nn.Module
        Exported committee file (or a scripted/eager :class:`~advmd.committee.CommitteePotential`).
    types : sequence of str or int
        Element of each LAMMPS atom type, in type order (``["H", "C", "N", "O"]``).
    fix_id : str
        ID of the fix; the vector is ``f_<fix_id>[1..6]``.
    bias_strength : float
        Strength when the LAMMPS variable ``strength_variable`` does not exist (LAMMPS units).
    strength_variable : str
        Name of an equal-style variable holding the strength.
    virial : bool
        Set the committee's virial (needed for pressure and NPT; costs about one more
        backward pass on periodic cells).
    device : str or torch.device

    Notes
    -----
    The committee gives no per-atom energies or virials. ``fix external`` still declares
    them, so the fix fills them with NaN: ``compute pe/atom`` and ``compute stress/atom``
    then read NaN for the committee's share, not a silent zero. Global energy, virial and
    pressure are exact.
    """

    def __init__(
        self,
        lmp: Any,
        model: Any,
        types: Sequence[Union[str, int]],
        fix_id: str = "advmd",
        bias_strength: float = 0.0,
        strength_variable: str = "advmd_bias_strength",
        virial: bool = True,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        from advmd.committee import load_committee
        from advmd.committee.export import model_dtype

        self.lmp = lmp
        if isinstance(model, (str, os.PathLike)):
            model, self.metadata = load_committee(model, map_location=device)
        else:
            self.metadata = {}
        self.potential = model
        # As at the OpenMM and ASE boundaries: a committee of buffer-only members computes in its buffers' dtype.
        self.dtype = model_dtype(model)
        self.device = torch.device(device)
        self.fix_id = str(fix_id)
        self.strength_variable = strength_variable
        self.default_strength = float(bias_strength)
        self.virial = bool(virial)

        style = str(lmp.extract_global("units"))
        if style not in LAMMPS_UNITS:
            raise ValueError(f"LAMMPS units {style!r} are not supported; use 'units metal' (Angstrom, eV) or 'units real'")
        self.units = style
        self.energy_per_ev = LAMMPS_UNITS[style]
        self.numbers_by_type = _atomic_numbers(types)
        n_types = int(lmp.extract_global("ntypes"))
        if len(self.numbers_by_type) != n_types:
            raise ValueError(f"types lists {len(self.numbers_by_type)} elements but the LAMMPS box has {n_types} atom types")
        species = set(int(z) for z in getattr(model, "species", []))
        missing = sorted(set(self.numbers_by_type) - species) if species else []
        if missing:
            raise ValueError(
                f"types map to atomic numbers {missing} that the committee was not trained on (species {sorted(species)})"
            )
        self.strength_unit = self._strength_unit()

        self.natoms = int(lmp.get_natoms())
        atom_types = np.array(lmp.gather_atoms("type", 0, 1), dtype=np.int64)
        self.numbers = torch.tensor([self.numbers_by_type[t - 1] for t in atom_types], dtype=torch.long, device=self.device)
        self.last: Optional[Dict[str, float]] = None
        self.calls = 0
        # NaN per-atom energy and virial buffers (see Notes), rebuilt when the number of local atoms changes.
        self._peratom: Optional[tuple] = None

        self.error: Optional[BaseException] = None
        lmp.command(f"fix {self.fix_id} all external pf/callback 1 1")
        lmp.command(f"fix_modify {self.fix_id} energy yes virial {'yes' if self.virial else 'no'}")
        lmp.set_fix_external_callback(self.fix_id, self._guarded_callback, None)
        lmp.fix_external_set_vector_length(self.fix_id, len(VECTOR_LABELS) + 1)
        # LAMMPS' Python callback wrapper swallows exceptions (the run would go on with zero forces): the callback
        # sets an error flag (vector entry 7) instead, and this fix halts the run with a LAMMPS error on it.
        lmp.command(f"variable {self.fix_id}_error equal f_{self.fix_id}[{len(VECTOR_LABELS) + 1}]")
        lmp.command(f"fix {self.fix_id}_guard all halt 1 v_{self.fix_id}_error > 0 error hard message yes")

    # ------------------------------------------------------------------ helpers
    def _strength_unit(self) -> str:
        unit = self.metadata.get("bias", {}).get("strength_unit")
        if unit is None:
            bias = getattr(self.potential, "bias", None)
            unit = getattr(bias, "strength_unit", "energy")
        return str(unit)

    def strength(self) -> float:
        """The bias strength in LAMMPS units (the variable's value, or the default)."""
        if not self.lmp.has_id("variable", self.strength_variable):
            return self.default_strength
        value = float(self.lmp.extract_variable(self.strength_variable))
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"LAMMPS variable {self.strength_variable} = {value!r}; the bias strength must be finite and >= 0")
        return value

    def _model_strength(self, strength: float) -> float:
        # UDD's amplitude is an energy (convert to eV); HAL's tau a length (Angstrom in both unit styles)
        return strength / self.energy_per_ev if self.strength_unit == "energy" else strength

    def _cell(self) -> Optional[np.ndarray]:
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        periodic = [bool(p) for p in periodicity]
        if not any(periodic):
            return None
        if not all(periodic):
            raise ValueError(
                f"LAMMPS boundary periodicity {periodic} is mixed; the committee supports fully periodic or fully open boxes"
            )
        lengths = np.array(boxhi) - np.array(boxlo)
        return np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])

    def compute(self, positions: np.ndarray, strength: float) -> Dict[str, Any]:
        """Committee results for all atoms in LAMMPS units (positions in Angstrom, ordered by atom ID)."""
        cell = self._cell()
        pos = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
        box = None if cell is None else torch.as_tensor(cell, dtype=self.dtype, device=self.device)
        value = torch.tensor(self._model_strength(strength), dtype=self.dtype, device=self.device)
        virial = None
        if self.virial and box is not None:
            # W_ab = -dE/d(strain_ab). An upper-triangular strain keeps the cell lower triangular (the reduced
            # form the model takes); rotational invariance makes the full gradient symmetric, so its upper
            # triangle gives the whole virial.
            strain = torch.zeros(3, 3, dtype=self.dtype, device=self.device, requires_grad=True)
            upper = torch.triu(torch.ones(3, 3, dtype=self.dtype, device=self.device))
            deformation = torch.eye(3, dtype=self.dtype, device=self.device) + strain * upper
            out = self.potential.evaluate(pos @ deformation.T, self.numbers, box @ deformation.T, value, True)
            gradient = torch.autograd.grad([out["energy"]], [strain])[0]
            upper_gradient = -(gradient * upper).detach().double().cpu().numpy()
            virial = upper_gradient + np.triu(upper_gradient, 1).T
        else:
            out = self.potential.evaluate(pos, self.numbers, box, value, False)
        out = {key: value.detach() for key, value in out.items()}
        forces = out["forces"].double().cpu().numpy()
        if self.virial and virial is None:
            virial = np.einsum("ia,ib->ab", positions, forces)
        e = self.energy_per_ev
        result = {
            "energy": float(out["energy"]) * e,
            "forces": forces * e,
            "sigma_energy": float(out["sigma_e2"].clamp(min=0).sqrt()) * e,
            "sigma_force": float(out["sigma_f2"].clamp(min=0).sqrt()) * e,
            "max_force_deviation": float(out["max_force_deviation"]) * e,
            "max_deviation_atom_id": int(out["max_deviation_atom"]) + 1,
            "bias_energy": float(out["bias_energy"]) * e,
            "bias_strength": float(strength),
        }
        if virial is not None:
            result["virial"] = virial * e
        return result

    # ------------------------------------------------------------------ the LAMMPS callback
    def _guarded_callback(self, caller: Any, timestep: int, nlocal: int, tags: Any, x: Any, f: Any) -> None:
        try:
            self._callback(caller, timestep, nlocal, tags, x, f)
        except BaseException as error:  # re-raised by run(); LAMMPS would otherwise ignore it
            self.error = error
            logger.error("advmd committee fix %s failed at step %d: %s", self.fix_id, timestep, error)
            if nlocal:
                f[:nlocal] = 0.0  # no stale forces on the step that the guard stops
            self.lmp.fix_external_set_vector(self.fix_id, len(VECTOR_LABELS) + 1, 1.0)

    def run(self, command: str) -> None:
        """Run a LAMMPS command (e.g. ``"run 1000"``); an error in the committee callback is raised here, with its cause."""
        self.error = None
        try:
            self.lmp.command(command)
        except Exception as lammps_error:
            if self.error is not None:
                raise RuntimeError(f"the advmd committee fix failed during {command!r}: {self.error}") from self.error
            raise lammps_error
        if self.error is not None:
            raise RuntimeError(f"the advmd committee fix failed during {command!r}: {self.error}") from self.error

    def _mark_peratom_unknown(self, nlocal: int) -> None:
        """Per-atom energy and virial of the local atoms: NaN (LAMMPS uses them only when a compute asks)."""
        if nlocal == 0:
            return
        if self._peratom is None or self._peratom[0] != nlocal:
            energy = (ctypes.c_double * nlocal)(*([math.nan] * nlocal))
            rows = [(ctypes.c_double * 6)(*([math.nan] * 6)) for _ in range(nlocal)]
            pointer = ctypes.POINTER(ctypes.c_double)
            table = (pointer * nlocal)(*[ctypes.cast(row, pointer) for row in rows])
            self._peratom = (nlocal, energy, rows, table)
        _, energy, _, table = self._peratom
        # The C library directly: the Python wrappers copy the arrays element by element at every call.
        handle, fix_id = self.lmp.lmp, self.fix_id.encode()
        self.lmp.lib.lammps_fix_external_set_energy_peratom(handle, fix_id, energy)
        if self.virial:
            self.lmp.lib.lammps_fix_external_set_virial_peratom(handle, fix_id, table)

    def _callback(self, caller: Any, timestep: int, nlocal: int, tags: Any, x: Any, f: Any) -> None:
        lmp = self.lmp
        positions = np.array(lmp.gather_atoms("x", 1, 3), dtype=np.float64).reshape(-1, 3)
        if len(positions) != self.natoms:
            raise RuntimeError(f"LAMMPS now has {len(positions)} atoms but had {self.natoms} when the fix was created")
        result = self.compute(positions, self.strength())
        if nlocal:
            local = np.asarray(tags[:nlocal], dtype=np.int64) - 1
            f[:nlocal] = result["forces"][local]
        lmp.fix_external_set_energy_global(self.fix_id, result["energy"])
        self._mark_peratom_unknown(nlocal)
        if "virial" in result:
            v = result["virial"]
            lmp.fix_external_set_virial_global(self.fix_id, [v[0, 0], v[1, 1], v[2, 2], v[0, 1], v[0, 2], v[1, 2]])
        for k, label in enumerate(VECTOR_LABELS, start=1):
            lmp.fix_external_set_vector(self.fix_id, k, float(result[label]))
        lmp.fix_external_set_vector(self.fix_id, len(VECTOR_LABELS) + 1, 0.0)
        self.last = {label: float(result[label]) for label in VECTOR_LABELS}
        self.last["energy"] = result["energy"]
        self.calls += 1
