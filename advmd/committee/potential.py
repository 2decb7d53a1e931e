"""The committee potential: mean energy plus an uncertainty bias, with exact forces.

``E_total(R) = mean_m E_m(R) + bias(sigma_E^2(R), sigma_F^2(R); strength)``

Forces are exact gradients of ``E_total``:

* member forces come from **one** backward pass of ``sum_m E_m`` with respect to
  per-member copies of the coordinates (so every member's forces cost one
  backward pass, not ``M``);
* the bias force through ``sigma_E^2`` is assembled analytically from member
  energies and forces, ``d sigma_E^2/dR = -2/(M-1) sum_m (E_m - E_mean) F_m``
  (no extra backward pass);
* the bias force through ``sigma_F^2`` needs second derivatives: member forces
  are then built with ``create_graph=True`` and ``sigma_F^2`` is differentiated
  once more (double backward). This is skipped when the strength of a bias that
  is linear in its strength is zero.

Units: Angstrom, eV. Statistics use the estimators named in
:mod:`advmd.committee.statistics` (``M-1`` for Eq. 5 and 7).
"""

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from advmd.committee.bias import NoBias
from advmd.committee.statistics import energy_variance, force_variance, max_force_deviation

__all__ = ["CommitteePotential"]


class CommitteePotential(nn.Module):
    """Committee energies and forces, statistics, and an uncertainty bias in one module.

    Parameters
    ----------
    committee : nn.Module
        Maps member coordinates ``(M, N, 3)`` (Angstrom), atomic numbers ``(N,)``
        and an optional cell to member energies ``(M,)`` (eV); e.g.
        :class:`~advmd.committee.schnet.SchNetCommittee` or
        :class:`~advmd.committee.members.TorchScriptCommittee`. Must expose
        ``n_members``, ``species`` and ``cutoff``.
    bias : nn.Module, optional
        A bias with the interface of :mod:`advmd.committee.bias`; default none.
    pass_atoms : int, optional
        Large systems: members are evaluated a few at a time, at most
        ``max(1, pass_atoms // N)`` per pass, so the autograd graph held at once
        stays small (peak memory of a sigma_F-bias step falls about M-fold).
        Used in MD (``create_graph=False``) by committees that expose
        ``member_energies`` (e.g. :class:`~advmd.committee.schnet.SchNetCommittee`).
        ``0`` always evaluates all members in one pass.

    Examples
    --------
    >>> import torch
    >>> from advmd.committee import SchNetCommittee, CommitteePotential, make_bias
    >>> committee = SchNetCommittee(species=[1, 8], n_members=3, n_features=16, n_rbf=8)
    >>> potential = CommitteePotential(committee, make_bias("udd", n_members=3, width=0.05))
    >>> pos = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    >>> out = potential(pos, torch.tensor([8, 1, 1]), None, torch.tensor(0.1))
    >>> sorted(out)[:3]
    ['bias_energy', 'energy', 'forces']
    """

    bias_uses_energy_uncertainty: bool
    bias_uses_force_uncertainty: bool
    bias_linear_in_strength: bool
    bias_nonnegative_strength: bool
    pass_atoms: int
    first_order_in_passes: bool

    def __init__(self, committee: nn.Module, bias: Optional[nn.Module] = None, pass_atoms: int = 1024) -> None:
        super().__init__()
        if int(pass_atoms) != pass_atoms or pass_atoms < 0:
            raise ValueError(f"pass_atoms must be an integer >= 0 (0: all members in one pass), got {pass_atoms!r}")
        self.pass_atoms = int(pass_atoms)
        n_members = int(getattr(committee, "n_members"))
        if n_members < 2:
            raise ValueError(f"a committee potential needs at least 2 members for Eq. 5/7 statistics, got {n_members}")
        self.committee = committee
        self.bias = bias if bias is not None else NoBias()
        bias_members = getattr(self.bias, "n_members", None)
        if bias_members is not None and int(bias_members) != n_members:
            raise ValueError(f"the bias was built for N_M={bias_members} members but the committee has {n_members}")
        self.n_members = n_members
        self.species: List[int] = [int(z) for z in getattr(committee, "species")]
        # For the element check of every call (not persistent: rebuilt from species, absent from older files' state).
        self.register_buffer("known_species", torch.tensor(self.species, dtype=torch.long), persistent=False)
        self.cutoff = float(getattr(committee, "cutoff"))
        self.bias_uses_energy_uncertainty = bool(self.bias.uses_energy_uncertainty)
        self.bias_uses_force_uncertainty = bool(self.bias.uses_force_uncertainty)
        builtin = self.bias.form in ("none", "udd", "hal")
        self.bias_linear_in_strength = builtin
        self.bias_nonnegative_strength = builtin
        # Evaluations that need only first derivatives take the pass route at every size (set by
        # :class:`~advmd.committee.compiled.CompiledCommitteePotential`, whose passes are compiled).
        self.first_order_in_passes = False

    def forward(self, positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor], strength: Tensor) -> Dict[str, Tensor]:
        """Evaluate for MD: outputs carry no autograd graph (see :meth:`evaluate`)."""
        return self.evaluate(positions, atomic_numbers, cell, strength, False)

    @torch.jit.export
    def evaluate(
        self,
        positions: Tensor,
        atomic_numbers: Tensor,
        cell: Optional[Tensor],
        strength: Tensor,
        create_graph: bool,
    ) -> Dict[str, Tensor]:
        """Energies, forces and committee statistics.

        Parameters
        ----------
        positions : Tensor, shape (N, 3), unit Angstrom
        atomic_numbers : Tensor, shape (N,), dtype int64
        cell : Tensor or None, shape (3, 3), unit Angstrom
            Reduced-form box vectors as rows; ``None`` for open boundaries.
        strength : Tensor, shape (), unit of the bias (see ``bias.strength_unit``)
        create_graph : bool
            Keep the autograd graph so outputs can be differentiated again
            (training on forces, adversarial attacks). MD uses ``False``.

        Returns
        -------
        dict of Tensor
            ``energy`` (eV) and ``forces`` (N, 3; eV/Angstrom) of mean + bias;
            ``mean_energy``, ``mean_forces``, ``member_energies`` (M,),
            ``member_forces`` (M, N, 3), ``bias_energy`` (eV), ``sigma_e2``
            (eV^2, Eq. 5), ``sigma_f2`` ((eV/Angstrom)^2, Eq. 7),
            ``max_force_deviation`` (eV/Angstrom, DP-GEN) and
            ``max_deviation_atom`` (int64 index).
        """
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("positions contain NaN or infinite values; the simulation has diverged or the input is corrupt")
        if not bool(torch.isfinite(strength)):
            raise ValueError("bias strength must be finite")
        # Checked here for every route: a committee's own lookup may not catch it (a compiled SchNet read an unknown
        # element's index -1 as the last species).
        if not bool(torch.isin(atomic_numbers, self.known_species.to(atomic_numbers.device)).all()):
            raise ValueError(f"atomic_numbers contain elements the committee was not trained on (species {self.species})")
        if self.bias_nonnegative_strength and bool(strength < 0):
            raise ValueError("bias strength must be >= 0 for the built-in bias forms")
        if cell is not None:
            if bool(cell[0, 1] != 0) or bool(cell[0, 2] != 0) or bool(cell[1, 2] != 0):
                raise ValueError("cell must be in OpenMM reduced form (lower triangular: a=(ax,0,0), b=(bx,by,0))")
            half_width = 0.5 * float(cell.detach().diagonal().min())
            if self.cutoff > half_width:
                raise ValueError("the model cutoff exceeds half the smallest periodic box width; use a larger box")

        m = self.n_members
        n_atoms = positions.shape[0]
        bias_active = self.bias_uses_energy_uncertainty or self.bias_uses_force_uncertainty
        if self.bias_linear_in_strength and bool(strength == 0):
            bias_active = False
        if hasattr(self.committee, "member_energies"):
            if not create_graph and self.pass_atoms > 0 and n_atoms * m > self.pass_atoms:
                return self._evaluate_in_passes(positions, atomic_numbers, cell, strength, bias_active)
            if not create_graph and self.first_order_in_passes and not (bias_active and self.bias_uses_force_uncertainty):
                return self._evaluate_in_passes(positions, atomic_numbers, cell, strength, bias_active)

        if not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        member_positions = positions.unsqueeze(0).repeat(m, 1, 1)
        member_energies = self.committee(member_positions, atomic_numbers, cell)
        second_order = create_graph or (bias_active and self.bias_uses_force_uncertainty)
        gradients = torch.autograd.grad(
            [member_energies.sum()], [member_positions], create_graph=second_order, retain_graph=second_order
        )[0]
        assert gradients is not None
        member_forces = -gradients

        mean_energy = member_energies.mean()
        mean_forces = member_forces.mean(0)
        sigma_e2 = energy_variance(member_energies)
        sigma_f2 = force_variance(member_forces)
        max_dev, max_atom = max_force_deviation(member_forces.detach())

        if create_graph:
            bias_energy = self.bias(sigma_e2, sigma_f2, n_atoms, strength)
            energy = mean_energy + bias_energy
            if bias_energy.requires_grad:
                bias_gradient = torch.autograd.grad([bias_energy], [positions], create_graph=True, allow_unused=True)[0]
                forces = mean_forces if bias_gradient is None else mean_forces - bias_gradient
            else:
                forces = mean_forces
        else:
            forces = mean_forces.detach()
            if bias_active:
                s_e2 = sigma_e2.detach().requires_grad_(True)
                s_f2 = sigma_f2.detach().requires_grad_(True)
                bias_energy = self.bias(s_e2, s_f2, n_atoms, strength.detach())
                if bias_energy.requires_grad:
                    slopes = torch.autograd.grad([bias_energy], [s_e2, s_f2], allow_unused=True)
                    slope_e = slopes[0]
                    slope_f = slopes[1]
                    if slope_e is not None:
                        deviation = (member_energies - mean_energy).detach()
                        weighted = (deviation.view(m, 1, 1) * member_forces.detach()).sum(0)
                        forces = forces + slope_e * (2.0 / (m - 1)) * weighted
                    if slope_f is not None and self.bias_uses_force_uncertainty:
                        sigma_f2_gradient = torch.autograd.grad([sigma_f2], [positions])[0]
                        assert sigma_f2_gradient is not None
                        forces = forces - slope_f * sigma_f2_gradient
                bias_energy = bias_energy.detach()
            else:
                bias_energy = torch.zeros_like(mean_energy)
            energy = mean_energy.detach() + bias_energy
            mean_energy = mean_energy.detach()
            mean_forces = mean_forces.detach()
            member_energies = member_energies.detach()
            member_forces = member_forces.detach()
            sigma_e2 = sigma_e2.detach()
            sigma_f2 = sigma_f2.detach()

        return {
            "energy": energy,
            "forces": forces,
            "mean_energy": mean_energy,
            "mean_forces": mean_forces,
            "member_energies": member_energies,
            "member_forces": member_forces,
            "bias_energy": bias_energy,
            "sigma_e2": sigma_e2,
            "sigma_f2": sigma_f2,
            "max_force_deviation": max_dev,
            "max_deviation_atom": max_atom,
        }

    def _members_per_pass(self, n_atoms: int) -> int:
        """Members evaluated together: ``max(1, pass_atoms // n_atoms)``, all of them for ``pass_atoms = 0``."""
        if self.pass_atoms == 0:
            return self.n_members
        return max(1, self.pass_atoms // n_atoms)

    def _member_passes(self, n_atoms: int) -> List[int]:
        """First member of each pass (see :meth:`_members_per_pass`)."""
        return list(range(0, self.n_members, self._members_per_pass(n_atoms)))

    def _first_order_pass(
        self,
        member_positions: Tensor,
        atomic_numbers: Tensor,
        cell: Optional[Tensor],
        first: int,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]],
    ) -> Tuple[Tensor, Tensor]:
        """Energies (k,) and energy gradients (k, N, 3) of one pass's members, without a graph."""
        energies = self._pass_energies(member_positions, atomic_numbers, cell, first, pairs)
        gradient = torch.autograd.grad([energies.sum()], [member_positions])[0]
        assert gradient is not None
        # Detached: the energies' autograd graph would keep the pass's saved tensors alive
        # (about 400 MB per member at 3000 atoms).
        return energies.detach(), gradient

    def _pass_energies(
        self,
        member_positions: Tensor,
        atomic_numbers: Tensor,
        cell: Optional[Tensor],
        first: int,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]],
    ) -> Tensor:
        """Energies of one pass's members, on the call's shared pair list when the committee takes one."""
        # hasattr is resolved when the module is scripted: only the branch the committee supports is compiled.
        if hasattr(self.committee, "pair_list"):
            return self.committee.member_energies(member_positions, atomic_numbers, cell, first, pairs)
        return self.committee.member_energies(member_positions, atomic_numbers, cell, first)

    def _evaluate_in_passes(
        self, positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor], strength: Tensor, bias_active: bool
    ) -> Dict[str, Tensor]:
        """The MD evaluation (no graph kept) for large systems, a few members per pass (and at every size for a
        first-order evaluation when ``first_order_in_passes``: the compiled potential's route).

        Energies and forces: one forward and backward pass per group of members.
        The sigma_F^2 gradient (for a bias in sigma_F) is exact and decomposes over
        members: ``d sigma_F^2/dR = 2/((M-1) 3N) sum_m J_m^T (F_m - F_mean)`` with
        ``J_m = dF_m/dR`` (the sum of the deviations is zero, so ``F_mean`` does not
        vary). A second pass per group computes these Hessian-vector products by a
        double backward with the deviations held fixed.
        """
        m = self.n_members
        n_atoms = positions.shape[0]
        starts = self._member_passes(n_atoms)
        per_pass = self._members_per_pass(n_atoms)
        base = positions.detach()
        # One pair search for every pass (and for the second passes of a sigma_F bias).
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]] = None
        if hasattr(self.committee, "pair_list"):
            pairs = self.committee.pair_list(base, cell)
        energy_parts: List[Tensor] = []
        force_parts: List[Tensor] = []
        for first in starts:
            k = min(per_pass, m - first)
            member_positions = base.unsqueeze(0).repeat(k, 1, 1).requires_grad_(True)
            energies, gradient = self._first_order_pass(member_positions, atomic_numbers, cell, first, pairs)
            energy_parts.append(energies)
            force_parts.append(gradient)
        member_energies = torch.cat(energy_parts).detach()
        member_forces = -torch.cat(force_parts).detach()
        mean_energy = member_energies.mean()
        mean_forces = member_forces.mean(0)
        sigma_e2 = energy_variance(member_energies)
        sigma_f2 = force_variance(member_forces)
        max_dev, max_atom = max_force_deviation(member_forces)
        forces = mean_forces
        bias_energy = torch.zeros_like(mean_energy)
        if bias_active:
            s_e2 = sigma_e2.clone().requires_grad_(True)
            s_f2 = sigma_f2.clone().requires_grad_(True)
            bias_energy = self.bias(s_e2, s_f2, n_atoms, strength.detach())
            if bias_energy.requires_grad:
                slopes = torch.autograd.grad([bias_energy], [s_e2, s_f2], allow_unused=True)
                slope_e = slopes[0]
                slope_f = slopes[1]
                if slope_e is not None:
                    deviation = member_energies - mean_energy
                    weighted = (deviation.view(m, 1, 1) * member_forces).sum(0)
                    forces = forces + slope_e * (2.0 / (m - 1)) * weighted
                if slope_f is not None and self.bias_uses_force_uncertainty:
                    deviations = member_forces - mean_forces
                    sigma_f2_gradient = torch.zeros_like(mean_forces)
                    for first in starts:
                        k = min(per_pass, m - first)
                        member_positions = base.unsqueeze(0).repeat(k, 1, 1).requires_grad_(True)
                        energies = self._pass_energies(member_positions, atomic_numbers, cell, first, pairs)
                        gradient = torch.autograd.grad([energies.sum()], [member_positions], create_graph=True)[0]
                        assert gradient is not None
                        # F_m = -gradient; d/dR of sum_m (F_m . v_m) with v_m fixed is sum_m J_m^T v_m.
                        projection = -(gradient * deviations[first : first + k]).sum()
                        hvp = torch.autograd.grad([projection], [member_positions])[0]
                        assert hvp is not None
                        sigma_f2_gradient = sigma_f2_gradient + hvp.sum(0)
                    sigma_f2_gradient = sigma_f2_gradient * (2.0 / ((m - 1) * n_atoms * 3))
                    forces = forces - slope_f * sigma_f2_gradient
        bias_energy = bias_energy.detach()
        return {
            "energy": mean_energy.detach() + bias_energy,
            "forces": forces.detach(),
            "mean_energy": mean_energy.detach(),
            "mean_forces": mean_forces.detach(),
            "member_energies": member_energies,
            "member_forces": member_forces,
            "bias_energy": bias_energy,
            "sigma_e2": sigma_e2.detach(),
            "sigma_f2": sigma_f2.detach(),
            "max_force_deviation": max_dev.detach(),
            "max_deviation_atom": max_atom,
        }
