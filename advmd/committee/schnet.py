"""A committee of SchNet potentials evaluated together in one call.

SchNet (Schuett et al., J. Chem. Phys. 148, 241722, 2018): atom embeddings
refined by continuous-filter convolutions whose filters are generated from a
Gaussian radial basis of interatomic distances and damped by a smooth cutoff;
atomic energies from a small output network, summed to the total energy.

Every weight carries a leading member axis ``M``: the committee is one module
whose dense layers are batched matrix products (``torch.baddbmm``), so all
members are evaluated in a single pass over a shared pair list. Members are
independent models: they share no trainable parameter.

Units: Angstrom in, eV out.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from advmd.committee.neighbors import neighbor_pairs

__all__ = ["SchNetCommittee"]


def shifted_softplus(x: Tensor) -> Tensor:
    """``softplus(x) - log 2`` (SchNet's activation, zero at the origin)."""
    return torch.nn.functional.softplus(x) - math.log(2.0)


def smooth_cutoff(distances: Tensor, cutoff: float) -> Tensor:
    """C2-smooth switching function: 1 at 0, 0 with zero first and second derivatives at ``cutoff``.

    ``f(x) = 1 - 10 x^3 + 15 x^4 - 6 x^5`` for ``x = d / cutoff < 1``, else 0.
    Second-order smoothness matters: forces of a ``sigma_F`` bias contain second
    derivatives of the energy, which must stay continuous when pairs cross the cutoff.
    """
    x = (distances / cutoff).clamp(max=1.0)
    x3 = x * x * x
    return 1.0 - x3 * (10.0 - 15.0 * x + 6.0 * x * x)


def _dense(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Member-batched affine map: ``x`` (M, K, in) @ ``weight`` (M, in, out) + ``bias`` (M, out)."""
    if bias is None:
        return torch.bmm(x, weight)
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


class SchNetCommittee(nn.Module):
    """``M`` independent SchNet energy models with member-batched weights.

    Parameters
    ----------
    species : sequence of int
        Atomic numbers the models know (e.g. ``[1, 6, 7, 8]``).
    n_members : int
        Committee size ``M`` (>= 1; statistics need >= 2).
    n_features : int
        Width of atom features and filters.
    n_rbf : int
        Number of Gaussian radial basis functions on ``[0, cutoff]``.
    n_interactions : int
        Number of interaction (continuous-filter convolution) blocks.
    cutoff : float, unit Angstrom
    seed : int
        Seed of the weight initialisation; members draw independent weights.

    Examples
    --------
    >>> import torch
    >>> model = SchNetCommittee(species=[1, 8], n_members=3, n_features=16, n_rbf=8)
    >>> positions = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    >>> z = torch.tensor([8, 1, 1])
    >>> model(positions.expand(3, 3, 3), z, None).shape
    torch.Size([3])
    """

    def __init__(
        self,
        species: Sequence[int],
        n_members: int = 5,
        n_features: int = 64,
        n_rbf: int = 32,
        n_interactions: int = 3,
        cutoff: float = 5.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        species = sorted({int(z) for z in species})
        if not species or species[0] < 1 or species[-1] > 118:
            raise ValueError(f"species must be atomic numbers in 1..118, got {species!r}")
        for name, value, low in (
            ("n_members", n_members, 1),
            ("n_features", n_features, 2),
            ("n_rbf", n_rbf, 2),
            ("n_interactions", n_interactions, 1),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 Angstrom, got {cutoff!r}")
        m, f, k, t = int(n_members), int(n_features), int(n_rbf), int(n_interactions)
        self.species: List[int] = species
        self.n_members = m
        self.n_features = f
        self.n_rbf = k
        self.n_interactions = t
        self.cutoff = float(cutoff)
        # Rows per block of the all-pairs search (small systems): a block of candidates stays in cache.
        self.pair_block_rows = 128

        lookup = torch.full((max(species) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_index", lookup)
        centers = torch.linspace(0.0, self.cutoff, k)
        spacing = self.cutoff / (k - 1)
        self.register_buffer("rbf_centers", centers)
        self.rbf_gamma = 0.5 / spacing**2
        # Per-species reference energies (eV) and output scale; fitted from data by training.
        self.register_buffer("atomic_energy_shift", torch.zeros(len(species)))
        self.register_buffer("energy_scale", torch.ones(()))
        # Tabulated filters (see ``tabulated``): empty and unused until a copy is tabulated.
        # Not persistent: a state dict holds the weights only; the tables are rebuilt from them.
        self.uses_tables = False
        self.table_spacing = 0.0
        self.table_intervals = 0
        self.register_buffer("filter_table", torch.zeros((t, 0, 6, m, f)), persistent=False)
        # The same coefficients member-major, (T, M, n, 6, F): cheap gathers for a pass of a few members.
        self.register_buffer("member_table", torch.zeros((t, m, 0, 6, f)), persistent=False)

        gen = torch.Generator().manual_seed(int(seed))

        def weight(*shape: int) -> nn.Parameter:
            fan_in, fan_out = shape[-2], shape[-1]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            return nn.Parameter((torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound)

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(shape))

        s = len(species)
        self.embedding = nn.Parameter(torch.randn((m, s, f), generator=gen))
        self.filter_w1 = weight(t, m, k, f)
        self.filter_b1 = zeros(t, m, f)
        self.filter_w2 = weight(t, m, f, f)
        self.filter_b2 = zeros(t, m, f)
        self.in2f_w = weight(t, m, f, f)
        self.f2out_w1 = weight(t, m, f, f)
        self.f2out_b1 = zeros(t, m, f)
        self.f2out_w2 = weight(t, m, f, f)
        self.f2out_b2 = zeros(t, m, f)
        self.out_w1 = weight(m, f, f // 2)
        self.out_b1 = zeros(m, f // 2)
        self.out_w2 = weight(m, f // 2, 1)
        self.out_b2 = zeros(m, 1)

    def hyperparameters(self) -> dict:
        """Constructor arguments that rebuild this architecture (for metadata)."""
        return {
            "species": list(self.species),
            "n_members": self.n_members,
            "n_features": self.n_features,
            "n_rbf": self.n_rbf,
            "n_interactions": self.n_interactions,
            "cutoff": self.cutoff,
        }

    @torch.jit.unused
    def member_axes(self) -> Dict[str, int]:
        """The member axis of every parameter: 0 for the embedding and output layers (M, ...), 1 for the
        per-interaction weights (T, M, ...). Lets a trainer and :meth:`select_members` treat members separately."""
        return {name: 0 if name == "embedding" or name.startswith("out_") else 1 for name, _ in self.named_parameters()}

    def forward(self, member_positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor]) -> Tensor:
        """Energies of every member.

        Parameters
        ----------
        member_positions : Tensor, shape (M, N, 3), unit Angstrom
            One copy of the coordinates per member (so that one backward pass
            of the summed energies yields every member's forces).
        atomic_numbers : Tensor, shape (N,), dtype int64
        cell : Tensor or None, shape (3, 3), unit Angstrom

        Returns
        -------
        Tensor, shape (M,), unit eV
        """
        return self.atomic_energies(member_positions, atomic_numbers, cell, None).sum(-1)

    @torch.jit.export
    def atomic_energies(
        self, member_positions: Tensor, atomic_numbers: Tensor, cell: Optional[Tensor], structure_index: Optional[Tensor]
    ) -> Tensor:
        """Per-atom energies of every member, shape (M, N), unit eV.

        ``structure_index`` (N,) lets one call evaluate a batch of structures
        concatenated along the atom axis (training); ``None`` for one structure.
        """
        return self._atomic_energies(member_positions, atomic_numbers, cell, structure_index, 0, None)

    @torch.jit.export
    def member_energies(
        self,
        member_positions: Tensor,
        atomic_numbers: Tensor,
        cell: Optional[Tensor],
        first: int,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
    ) -> Tensor:
        """Energies of members ``first .. first + k - 1`` for ``k = member_positions.shape[0]``, shape (k,), unit eV.

        Lets a caller evaluate the committee a few members at a time (large systems,
        where one pass over all members no longer fits in cache). ``pairs`` is the
        :meth:`pair_list` of these coordinates, found once for all passes; ``None``
        searches again.
        """
        k = member_positions.shape[0]
        if first < 0 or first + k > self.n_members:
            raise ValueError("members first .. first + k - 1 must lie within the committee")
        return self._atomic_energies(member_positions, atomic_numbers, cell, None, first, pairs).sum(-1)

    @torch.jit.export
    def pair_list(self, positions: Tensor, cell: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """The half pair list ``(i, j, shifts)`` the model uses for ``positions`` (N, 3), unit Angstrom.

        See :func:`~advmd.committee.neighbors.neighbor_pairs`; for :meth:`member_energies`.
        """
        return neighbor_pairs(positions.detach(), self.cutoff, cell, self.pair_block_rows, None, True)

    def _atomic_energies(
        self,
        member_positions: Tensor,
        atomic_numbers: Tensor,
        cell: Optional[Tensor],
        structure_index: Optional[Tensor],
        first: int,
        pairs: Optional[Tuple[Tensor, Tensor, Tensor]],
    ) -> Tensor:
        """Per-atom energies of members ``first .. first + k - 1``, shape (k, N), unit eV."""
        stop = first + member_positions.shape[0]
        species = self.species_index[atomic_numbers]
        # Half pair list: filters depend on |r_ij| only, so each is computed once and
        # carries messages both ways (j -> i and i -> j).
        if pairs is None:
            i, j, shifts = neighbor_pairs(member_positions[0], self.cutoff, cell, self.pair_block_rows, structure_index, True)
        else:
            i, j, shifts = pairs
        if cell is not None:
            # Periodic images as integer multiples of the box vectors, so that the energy follows a
            # deformation of the cell (its strain derivative is the virial); same values as ``shifts``.
            images = torch.round(torch.linalg.solve(cell.detach().T, shifts.T).T)
            shifts = images @ cell
        # index_select, not advanced indexing: its backward is index_add (fast), not a serial index_put.
        vectors = member_positions.index_select(1, j) - member_positions.index_select(1, i) + shifts
        distances = torch.sqrt((vectors * vectors).sum(-1))
        table_rows, table_weights, offset = distances, distances, distances  # used only with tables
        if self.uses_tables:
            rbf = distances  # unused
            envelope = distances
            table_rows, table_weights, offset = self._table_setup(distances)
        else:
            rbf = torch.exp(-self.rbf_gamma * (distances.unsqueeze(-1) - self.rbf_centers) ** 2)
            envelope = smooth_cutoff(distances, self.cutoff).unsqueeze(-1)

        x = self.embedding[first:stop].index_select(1, species)
        for t in range(self.n_interactions):
            if self.uses_tables:
                filters = self._table_filters(t, table_rows, table_weights, offset, first)
            else:
                hidden = shifted_softplus(_dense(rbf, self.filter_w1[t, first:stop], self.filter_b1[t, first:stop]))
                filters = _dense(hidden, self.filter_w2[t, first:stop], self.filter_b2[t, first:stop]) * envelope
            y = _dense(x, self.in2f_w[t, first:stop], None)
            aggregated = torch.zeros_like(y).index_add_(1, i, y.index_select(1, j) * filters)
            aggregated = aggregated.index_add_(1, j, y.index_select(1, i) * filters)
            update = shifted_softplus(_dense(aggregated, self.f2out_w1[t, first:stop], self.f2out_b1[t, first:stop]))
            x = x + _dense(update, self.f2out_w2[t, first:stop], self.f2out_b2[t, first:stop])

        hidden = shifted_softplus(_dense(x, self.out_w1[first:stop], self.out_b1[first:stop]))
        atomic = _dense(hidden, self.out_w2[first:stop], self.out_b2[first:stop]).squeeze(-1)
        return atomic * self.energy_scale + self.atomic_energy_shift[species]

    def _table_setup(self, distances: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """What every interaction's table lookup shares: table rows (3P, 6), their weights (3P, 6), offset.

        Row ``r * P + p`` of ``rows`` lists the 6 coefficient rows of pair ``p``'s interval and ``weights``
        the monomials that turn them into the value (``r = 0``), the slope (1) or half the curvature (2)
        of the table polynomial at the pair's position in its interval.

        ``offset`` (k, P, 1) is ``s = u - u0`` for ``u = distance / h``: zero in value, derivative 1, so the
        filters' graph can be the Taylor form of the table polynomial (see ``_table_filters``).
        """
        u = distances / self.table_spacing
        with torch.no_grad():
            u0 = u * 1.0
            # Every member sees the same distances (the copies of the coordinates are equal): one interval
            # and one monomial basis per pair.
            if u0.shape[0] > 1 and not bool((u0 == u0[0]).all()):
                raise ValueError("tabulated filters need the same coordinates for every member")
            cell_index = u0[0].floor().clamp(0.0, float(self.table_intervals - 1))
            x = (u0[0] - cell_index).unsqueeze(1)
            zero = torch.zeros_like(x)
            one = torch.ones_like(x)
            x2 = x * x
            x3 = x2 * x
            # Monomials of the value, the first and half the second derivative in x.
            basis = torch.cat(
                [
                    torch.cat([one, x, x2, x3, x3 * x, x3 * x2], dim=1),
                    torch.cat([zero, one, 2.0 * x, 3.0 * x2, 4.0 * x3, 5.0 * x3 * x], dim=1),
                    torch.cat([zero, zero, one, 3.0 * x, 6.0 * x2, 10.0 * x3], dim=1),
                ],
                dim=1,
            ).view(-1, 3, 6)
            n_pairs = basis.shape[0]
            rows = (cell_index.long().unsqueeze(1) * 6 + torch.arange(6, device=basis.device)).repeat(3, 1)
            weights = basis.transpose(0, 1).reshape(3 * n_pairs, 6)
        return rows, weights, (u - u0).unsqueeze(-1)

    def _table_filters(self, t: int, rows: Tensor, weights: Tensor, offset: Tensor, first: int) -> Tensor:
        """Filters of interaction ``t`` from the quintic tables, shape (k, P, F), exact to second order in distance.

        The table polynomial ``p`` is evaluated without autograd (value, first and half the
        second derivative at the pair's position in its interval); the graph is the
        second-order Taylor form ``p + s p' + s^2 p''/2`` in ``s = offset`` (zero in value), so
        forces and force derivatives (sigma_F bias, attacks) are those of the table polynomial.
        Third derivatives come out zero: nothing in advmd uses them.
        """
        k, n_pairs, f = offset.shape[0], offset.shape[1], self.n_features
        with torch.no_grad():
            # Fused gather and contraction (embedding_bag, mode "sum"): each pair's 6 coefficient rows of its
            # interval, weighted by the monomials of the value, slope and half curvature, without the
            # (P, 6, features) tensor of gathered rows (see ``_table_setup``).
            if k == self.n_members:
                # All members: table rows hold the members side by side -> (3, P, M, F) -> (3, M, P, F).
                table = self.filter_table[t].view(-1, k * f)
                polynomial = torch.nn.functional.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
                polynomial = polynomial.view(3, n_pairs, k, f).transpose(1, 2)
            else:
                # A few members (a pass of a large system): each from the member-major copy.
                parts = [
                    torch.nn.functional.embedding_bag(
                        rows, self.member_table[t, first + m].view(-1, f), per_sample_weights=weights, mode="sum"
                    ).view(3, 1, n_pairs, f)
                    for m in range(k)
                ]
                # One member per pass (large systems): a view, not a copy of (3, P, F).
                polynomial = parts[0] if k == 1 else torch.cat(parts, dim=1)
            value = polynomial[0]
            slope = polynomial[1]
            half_curvature = polynomial[2]
        # value + s * slope + s^2 * half_curvature in two fused passes over (k, P, F) instead of four.
        return torch.addcmul(torch.addcmul(value, offset, slope), offset * offset, half_curvature)

    @torch.jit.unused
    def exact_filters(self, distances: Tensor) -> Tensor:
        """Exact filters (filter network times cutoff envelope) of every interaction and member.

        ``distances`` (n,), unit Angstrom; returns (n_interactions, n_members, n, n_features).
        """
        d = distances.reshape(1, -1)
        rbf = torch.exp(-self.rbf_gamma * (d.unsqueeze(-1) - self.rbf_centers.to(d.dtype)) ** 2)
        envelope = smooth_cutoff(d, self.cutoff).unsqueeze(-1)
        out = []
        for t in range(self.n_interactions):
            w1, b1 = self.filter_w1[t].to(d.dtype), self.filter_b1[t].to(d.dtype)
            w2, b2 = self.filter_w2[t].to(d.dtype), self.filter_b2[t].to(d.dtype)
            hidden = shifted_softplus(torch.baddbmm(b1.unsqueeze(1), rbf.expand(self.n_members, -1, -1), w1))
            out.append(torch.baddbmm(b2.unsqueeze(1), hidden, w2) * envelope)
        return torch.stack(out)

    @torch.jit.unused
    def tabulated(self, spacing: float = 0.025) -> "SchNetCommittee":
        """A copy whose filters come from quintic Hermite tables (fast inference).

        The filters of SchNet depend on the pair distance alone, so each member's filter
        network (times the cutoff envelope) is tabulated on knots ``0, h, 2h, ..., cutoff``
        with its value, first and second derivative (float64 autograd), and interpolated by
        the C2 quintic Hermite polynomial of each interval. The copy skips the radial basis and
        both filter layers. Its energies are those of the table polynomial, with exact
        (conservative) forces of that energy and continuous second derivatives, so it suits
        MD, uncertainty biases and attacks. The interpolation error falls as ``h^6`` (energy)
        and ``h^5`` (forces): at the default ``h = 0.025`` Angstrom, for the benchmark
        committee (32 radial functions on 5 Angstrom) in float64, 1e-8 eV in energy and
        2e-7 eV/Angstrom in forces, below float32 rounding.

        The copy is for inference: its weights are frozen, training refuses it and loading
        a state dict into it raises. Tabulate again after any change of the weights, and
        after a change of dtype (``.double()`` of a float32 copy keeps float32 tables).
        """
        if self.uses_tables:
            raise ValueError("this committee is already tabulated; tabulate the exact committee")
        if not isinstance(spacing, (int, float)) or not (0.0 < float(spacing) <= 0.25):
            raise ValueError(f"spacing must be in (0, 0.25] Angstrom, got {spacing!r}")
        import copy

        new = copy.deepcopy(self)
        n = int(math.ceil(self.cutoff / float(spacing) - 1e-9))  # a recorded spacing cutoff / n gives n back
        h = self.cutoff / n
        knots = torch.linspace(0.0, self.cutoff, n + 1, dtype=torch.float64, device=self.embedding.device)
        with torch.enable_grad():
            value, slope = torch.func.jvp(self.exact_filters, (knots,), (torch.ones_like(knots),))

            def first_derivative(d: Tensor) -> Tensor:
                return torch.func.jvp(self.exact_filters, (d,), (torch.ones_like(d),))[1]

            curvature = torch.func.jvp(first_derivative, (knots,), (torch.ones_like(knots),))[1]
        # Per interval, in x = (d - d_k)/h: p(0), p'(0), p''(0) and p(1), p'(1), p''(1) match the filter.
        f0, f1 = value[:, :, :-1], value[:, :, 1:]
        g0, g1 = slope[:, :, :-1] * h, slope[:, :, 1:] * h
        c0, c1 = curvature[:, :, :-1] * h * h, curvature[:, :, 1:] * h * h
        a0, a1, a2 = f0, g0, 0.5 * c0
        rhs = torch.stack([f1 - a0 - a1 - a2, g1 - a1 - 2.0 * a2, c1 - 2.0 * a2], dim=-1)
        system = torch.tensor([[1.0, 1.0, 1.0], [3.0, 4.0, 5.0], [6.0, 12.0, 20.0]], dtype=torch.float64, device=rhs.device)
        a345 = torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)
        coefficients = torch.stack([a0, a1, a2, a345[..., 0], a345[..., 1], a345[..., 2]], dim=3)
        # (T, M, n, 6, F) -> (T, n, 6, M, F): one row per interval, members side by side.
        table = coefficients.permute(0, 2, 3, 1, 4)
        new.filter_table = table.to(dtype=self.embedding.dtype, device=self.embedding.device).contiguous()
        new.member_table = coefficients.to(dtype=self.embedding.dtype, device=self.embedding.device).contiguous()
        new.uses_tables = True
        new.table_spacing = h
        new.table_intervals = n
        for param in new.parameters():
            param.requires_grad_(False)
        return new

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        if self.uses_tables:
            raise RuntimeError(
                "this committee is a tabulated inference copy: its tables were built from the weights it had; "
                "load the weights into the exact committee and call tabulated() again"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    @torch.jit.unused
    def select_members(self, members: Sequence[int]) -> "SchNetCommittee":
        """A new committee made of copies of the chosen members (e.g. ``[2]`` for one model)."""
        members = [int(k) for k in members]
        if not members or min(members) < 0 or max(members) >= self.n_members:
            raise ValueError(f"members must be indices in 0..{self.n_members - 1}, got {members!r}")
        hp = self.hyperparameters()
        hp["n_members"] = len(members)
        new = SchNetCommittee(**hp)
        index = torch.tensor(members)
        axes = self.member_axes()
        with torch.no_grad():
            for name, param in self.named_parameters():
                getattr(new, name).copy_(param.index_select(axes[name], index))
            new.atomic_energy_shift.copy_(self.atomic_energy_shift)
            new.energy_scale.copy_(self.energy_scale)
        new = new.to(dtype=self.embedding.dtype, device=self.embedding.device)
        if self.uses_tables:
            new.filter_table = self.filter_table[:, :, :, index].contiguous()
            new.member_table = self.member_table[:, index].contiguous()
            new.uses_tables = True
            new.table_spacing = self.table_spacing
            new.table_intervals = self.table_intervals
            for param in new.parameters():
                param.requires_grad_(False)
        return new
