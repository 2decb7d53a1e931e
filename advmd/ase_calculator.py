"""An ASE calculator for an advmd committee (ASE's units are advmd's: Angstrom, eV).

Use it for ASE workflows (NEB, optimisers, ASE's MD integrators); for production
MD prefer OpenMM (:mod:`advmd.openmm`), which runs the same model several times
faster per step than a Python-loop integrator.

Examples
--------
>>> from ase.build import molecule
>>> from advmd.ase_calculator import CommitteeCalculator
>>> atoms = molecule("NH3")
>>> atoms.calc = CommitteeCalculator("ammonia-committee.pt")  # doctest: +SKIP
>>> atoms.get_potential_energy(), atoms.calc.results["sigma_f2"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from advmd.committee.export import load_committee, model_dtype

__all__ = ["CommitteeCalculator"]


class CommitteeCalculator(Calculator):
    """Committee mean energy and forces plus the uncertainty bias, for ASE.

    Parameters
    ----------
    model : str, path-like or CommitteePotential
        An exported committee file or a potential module (eager or scripted).
    bias_strength : float
        Bias strength in the model's units (eV for ``udd``, Angstrom for ``hal``).
    device : str or torch.device

    Results: ``energy`` (eV), ``forces`` (eV/Angstrom), and the committee statistics
    ``sigma_e2`` (eV^2, Eq. 5), ``sigma_f2`` ((eV/Angstrom)^2, Eq. 7),
    ``max_force_deviation`` (eV/Angstrom), ``bias_energy`` (eV) and
    ``member_energies`` (eV).
    """

    implemented_properties: List[str] = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        model: Union[str, os.PathLike, torch.nn.Module],
        bias_strength: float = 0.0,
        device: Union[str, torch.device] = "cpu",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model, (str, os.PathLike)):
            model, _ = load_committee(model)
        self.device = torch.device(device)
        self.potential = model.to(self.device)
        self.dtype = model_dtype(self.potential)
        self.species = [int(z) for z in self.potential.species]
        self._bias_strength = float(bias_strength)

    @property
    def bias_strength(self) -> float:
        """Bias strength in the model's units; setting it discards the kept results (they were for the old one)."""
        return self._bias_strength

    @bias_strength.setter
    def bias_strength(self, value: float) -> None:
        value = float(value)
        if value != self._bias_strength:
            self.reset()
        self._bias_strength = value

    def calculate(
        self, atoms: Optional[Any] = None, properties: Optional[List[str]] = None, system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        numbers = self.atoms.get_atomic_numbers()
        unknown = sorted(set(int(z) for z in numbers) - set(self.species))
        if unknown:
            raise ValueError(f"atoms contain elements {unknown} the committee was not trained on (species {self.species})")
        cell: Optional[torch.Tensor] = None
        xyz = self.atoms.get_positions()
        rotation: Optional[np.ndarray] = None
        if self.atoms.pbc.any():
            if not self.atoms.pbc.all():
                raise ValueError("mixed periodicity is not supported: set atoms.pbc to all True or all False")
            # The model takes OpenMM's reduced form (lower-triangular cell rows); ASE cells are often not in it.
            # Rotate cell and positions into it (the energy is invariant) and the forces back.
            reduced, rotation = self.atoms.cell.standard_form()
            reduced = np.array(reduced)
            reduced[np.triu_indices(3, 1)] = 0.0
            if np.any(np.diag(reduced) <= 0):
                raise ValueError("the cell is left-handed (negative determinant); reorder its vectors to make it right-handed")
            cell = torch.tensor(reduced, dtype=self.dtype, device=self.device)
            xyz = xyz @ rotation.T
        positions = torch.tensor(xyz, dtype=self.dtype, device=self.device)
        z = torch.tensor(numbers, dtype=torch.long, device=self.device)
        out = self.potential(positions, z, cell, torch.tensor(self.bias_strength, dtype=self.dtype, device=self.device))
        out = {key: value.detach() for key, value in out.items()}
        energy = float(out["energy"])
        forces = out["forces"].to(torch.float64).cpu().numpy()
        if rotation is not None:
            forces = forces @ rotation  # back to the caller's axes
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces,
            "sigma_e2": float(out["sigma_e2"]),
            "sigma_f2": float(out["sigma_f2"]),
            "max_force_deviation": float(out["max_force_deviation"]),
            "bias_energy": float(out["bias_energy"]),
            "member_energies": out["member_energies"].to(torch.float64).cpu().numpy(),
        }
