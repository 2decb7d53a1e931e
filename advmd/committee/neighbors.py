"""Pair finding for finite and periodic systems (TorchScript-compatible).

Two searches give identical pairs:

* small systems (fewer than ``cell_list_min_atoms``, default 1024): all pairs, in row
  blocks, so peak memory is ``O(block * N)`` distances; cheapest below a few
  hundred atoms;
* larger systems: a **cell list**. Atoms are binned into cells at least one
  cutoff wide (in fractional coordinates for periodic boxes, over the bounding
  box otherwise); only atoms of the 27 neighbouring cells are candidates. Cost
  and memory are linear in ``N``.

Pairs are found on detached coordinates, never as an ``N x N x features`` tensor. The
periodic shift of each pair is a constant of the search; displacement vectors
are rebuilt afterwards with gradients flowing through the positions only.

Periodic cells follow OpenMM's *reduced form*: rows are the box vectors
``a = (ax, 0, 0)``, ``b = (bx, by, 0)``, ``c = (cx, cy, cz)`` (lower triangular),
with the cutoff at most half the smallest perpendicular box width, so the
minimum image is unique. Orthorhombic boxes are the special case of a
diagonal cell.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor


def minimum_image(displacements: Tensor, cell: Tensor) -> Tensor:
    """Wrap displacement vectors into the minimum image of a reduced-form cell.

    Parameters
    ----------
    displacements : Tensor, shape (..., 3), unit Angstrom
    cell : Tensor, shape (3, 3), unit Angstrom
        Box vectors as rows, lower triangular (OpenMM reduced form).

    Returns
    -------
    Tensor, shape (..., 3), unit Angstrom
    """
    d = displacements
    d = d - torch.round(d[..., 2:3] / cell[2, 2]) * cell[2]
    d = d - torch.round(d[..., 1:2] / cell[1, 1]) * cell[1]
    d = d - torch.round(d[..., 0:1] / cell[0, 0]) * cell[0]
    return d


def check_cell(cell: Tensor, cutoff: float) -> None:
    """Raise ``ValueError`` unless ``cell`` is a reduced-form box wide enough for ``cutoff``.

    Parameters
    ----------
    cell : Tensor, shape (3, 3), unit Angstrom
    cutoff : float, unit Angstrom
    """
    if cell.shape[0] != 3 or cell.shape[1] != 3:
        raise ValueError("cell must have shape (3, 3) with box vectors as rows")
    upper = torch.stack([cell[0, 1], cell[0, 2], cell[1, 2]])
    if bool((upper.abs() > 1e-6 * cell.diagonal().abs().max()).any()):
        raise ValueError(
            "cell must be lower triangular (OpenMM reduced form: a=(ax,0,0), b=(bx,by,0)); rotate the system into that form first"
        )
    half_width = 0.5 * float(cell.diagonal().min())
    if cutoff > half_width:
        raise ValueError(
            f"cutoff {cutoff:.4g} Angstrom exceeds half the smallest box width "
            f"({half_width:.4g} Angstrom); use a larger box (minimum image is ambiguous)"
        )


def neighbor_pairs(
    positions: Tensor,
    cutoff: float,
    cell: Optional[Tensor],
    block_size: int = 128,
    structure_index: Optional[Tensor] = None,
    half: bool = False,
    method: str = "auto",
    cell_list_min_atoms: int = 1024,
) -> Tuple[Tensor, Tensor, Tensor]:
    """All pairs ``(i, j)`` closer than ``cutoff``: ordered (``i != j``), or half (``i < j``).

    Parameters
    ----------
    positions : Tensor, shape (N, 3), unit Angstrom
    cutoff : float, unit Angstrom
    cell : Tensor or None, shape (3, 3), unit Angstrom
        Reduced-form periodic cell (see module doc); ``None`` for open boundaries.
    block_size : int
        Rows of the distance matrix computed at once (bounds peak memory).
    structure_index : Tensor or None, shape (N,), dtype int64
        For a batch of several structures in one array: the structure of each
        atom. Atoms of different structures are never paired.
    half : bool
        List each pair once (``i < j``) instead of in both orders; for models
        whose pair terms are symmetric (halves their cost).
    method : str
        ``"auto"`` (cell list from ``cell_list_min_atoms`` atoms on), ``"all"``
        (all pairs in blocks) or ``"cells"`` (cell list). Periodic batches of
        several structures always use all pairs.
    cell_list_min_atoms : int
        Size from which ``"auto"`` uses the cell list (below it all pairs are cheaper).

    Returns
    -------
    i, j : Tensor, shape (P,), dtype int64
        Both orderings of every pair, or only ``i < j`` with ``half=True``.
    shifts : Tensor, shape (P, 3), unit Angstrom
        Constant periodic shifts, so that ``positions[j] - positions[i] + shifts``
        is the minimum-image displacement (zeros without a cell).
    """
    if method not in ("auto", "all", "cells"):
        raise ValueError("method must be 'auto', 'all' or 'cells'")
    use_cells = method == "cells" or (method == "auto" and positions.shape[0] >= cell_list_min_atoms)
    if use_cells and not (cell is not None and structure_index is not None):
        return _cell_list_pairs(positions, cutoff, cell, structure_index, half)
    return _all_pairs(positions, cutoff, cell, block_size, structure_index, half)


def _all_pairs(
    positions: Tensor, cutoff: float, cell: Optional[Tensor], block_size: int, structure_index: Optional[Tensor], half: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """All-pairs search in row blocks (see :func:`neighbor_pairs`)."""
    with torch.no_grad():
        pos = positions.detach()
        n = pos.shape[0]
        cutoff2 = cutoff * cutoff
        rows = []
        cols = []
        shift_blocks = []
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            # A half list needs columns j > i only: the block's rows against atoms from ``start`` on.
            first_column = start if half else 0
            raw = pos[first_column:].unsqueeze(0) - pos[start:stop].unsqueeze(1)
            if cell is not None:
                wrapped = minimum_image(raw, cell)
            else:
                wrapped = raw
            within = (wrapped * wrapped).sum(-1) < cutoff2
            if structure_index is not None:
                within = within & (structure_index[start:stop].unsqueeze(1) == structure_index[first_column:].unsqueeze(0))
            pair_index = torch.nonzero(within)
            local_i = pair_index[:, 0]
            local_j = pair_index[:, 1]
            i = local_i + start
            j = local_j + first_column
            keep = j > i if half else i != j
            local_i = local_i[keep]
            local_j = local_j[keep]
            i = i[keep]
            j = j[keep]
            rows.append(i)
            cols.append(j)
            if cell is not None:
                shift_blocks.append(wrapped[local_i, local_j] - raw[local_i, local_j])
            else:
                shift_blocks.append(torch.zeros((i.shape[0], 3), dtype=pos.dtype, device=pos.device))
        if len(rows) == 0:
            empty = torch.zeros((0,), dtype=torch.long, device=pos.device)
            return empty, empty, torch.zeros((0, 3), dtype=pos.dtype, device=pos.device)
        return torch.cat(rows), torch.cat(cols), torch.cat(shift_blocks)


def _axis_offsets(n_bins: int, periodic: bool) -> List[int]:
    """Distinct neighbour-bin offsets along one axis (a periodic axis of 1 or 2 bins wraps onto itself)."""
    if periodic and n_bins == 1:
        return [0]
    if periodic and n_bins == 2:
        return [0, 1]
    return [-1, 0, 1]


def _cap_bins(n_bins: Tensor, n_atoms: int) -> Tensor:
    """At most ``max(8 N, 4096)`` bins in all: one atom far from the others (a molecule leaving a cluster, a drifting
    attack seed) would otherwise make the bin count grow with the cube of the span, not with N (1.4e7 bins for one
    atom 1200 A away). Fewer, wider bins keep the search exact: a bin stays at least a cutoff wide."""
    limit = float(max(8 * n_atoms, 4096))
    for _ in range(3):  # an axis floored to one bin leaves the others to shrink further
        total = float(n_bins.prod())
        if total <= limit:
            break
        axes = int((n_bins > 1).sum())
        n_bins = torch.floor(n_bins / (total / limit) ** (1.0 / axes)).clamp(min=1.0)
    return n_bins


def _cell_list_pairs(
    positions: Tensor, cutoff: float, cell: Optional[Tensor], structure_index: Optional[Tensor], half: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    """Cell-list search (see :func:`neighbor_pairs`): candidates from the 27 neighbouring bins only."""
    with torch.no_grad():
        pos = positions.detach()
        n = pos.shape[0]
        device = pos.device
        # Bins slightly wider than the cutoff, so rounding in the binning cannot hide a pair.
        bin_width = cutoff * (1.0 + 1e-5) + 1e-6
        periodic = cell is not None
        if cell is not None:
            coords = pos @ torch.linalg.inv(cell)
            coords = coords - torch.floor(coords)
            a, b, c = cell[0], cell[1], cell[2]
            volume = torch.abs(torch.linalg.det(cell))
            widths = torch.stack(
                [
                    volume / torch.linalg.cross(b, c).norm(),
                    volume / torch.linalg.cross(c, a).norm(),
                    volume / torch.linalg.cross(a, b).norm(),
                ]
            )
            n_bins = _cap_bins(torch.floor(widths / bin_width).clamp(min=1.0), n)
            scaled = coords * n_bins
        else:
            binned = pos
            if structure_index is not None:
                # Lay the structures of a batch side by side along x so they share few bins.
                extent_x = float(pos[:, 0].max() - pos[:, 0].min())
                binned = pos.clone()
                binned[:, 0] = binned[:, 0] + structure_index.to(pos.dtype) * (extent_x + 2.0 * cutoff)
            low = binned.min(0).values
            extent = binned.max(0).values - low
            n_bins = _cap_bins(torch.floor(extent / bin_width).clamp(min=1.0), n)
            scaled = (binned - low) / (extent / n_bins).clamp(min=1e-12)
        n_int = n_bins.long()
        bins = torch.minimum(torch.floor(scaled).long().clamp(min=0), n_int - 1)
        n0, n1, n2 = int(n_int[0]), int(n_int[1]), int(n_int[2])
        cell_id = (bins[:, 0] * n1 + bins[:, 1]) * n2 + bins[:, 2]
        order = torch.argsort(cell_id)
        counts = torch.bincount(cell_id, minlength=n0 * n1 * n2)
        starts = torch.cumsum(counts, 0) - counts

        offsets_list: List[List[int]] = []
        for o0 in _axis_offsets(n0, periodic):
            for o1 in _axis_offsets(n1, periodic):
                for o2 in _axis_offsets(n2, periodic):
                    offsets_list.append([o0, o1, o2])
        offsets = torch.tensor(offsets_list, dtype=torch.long, device=device)
        n_offsets = offsets.shape[0]
        neighbor_bins = bins.unsqueeze(1) + offsets.unsqueeze(0)
        if periodic:
            neighbor_bins = torch.remainder(neighbor_bins, n_int)
            valid = torch.ones(neighbor_bins.shape[:2], dtype=torch.bool, device=device)
        else:
            valid = ((neighbor_bins >= 0) & (neighbor_bins < n_int)).all(-1)
            neighbor_bins = torch.minimum(neighbor_bins.clamp(min=0), n_int - 1)
        neighbor_cell = ((neighbor_bins[..., 0] * n1 + neighbor_bins[..., 1]) * n2 + neighbor_bins[..., 2]).flatten()
        candidate_counts = torch.where(valid.flatten(), counts[neighbor_cell], torch.zeros_like(neighbor_cell))
        total = int(candidate_counts.sum())
        group = torch.repeat_interleave(torch.arange(n * n_offsets, device=device), candidate_counts, output_size=total)
        group_start = torch.cumsum(candidate_counts, 0) - candidate_counts
        rank = torch.arange(total, device=device) - group_start.index_select(0, group)
        i = torch.div(group, n_offsets, rounding_mode="floor")
        j = order.index_select(0, starts.index_select(0, neighbor_cell.index_select(0, group)) + rank)
        keep = j > i if half else i != j
        if structure_index is not None:
            keep = keep & (structure_index.index_select(0, i) == structure_index.index_select(0, j))
        kept = torch.nonzero(keep).squeeze(1)
        i = i.index_select(0, kept)
        j = j.index_select(0, kept)
        raw = pos.index_select(0, j) - pos.index_select(0, i)
        wrapped = raw
        if cell is not None:
            wrapped = minimum_image(raw, cell)
        within = torch.nonzero((wrapped * wrapped).sum(-1) < cutoff * cutoff).squeeze(1)
        i = i.index_select(0, within)
        j = j.index_select(0, within)
        shifts = wrapped.index_select(0, within) - raw.index_select(0, within)
        # The order of the all-pairs search (by i, then j), so both searches give identical lists.
        key = i * n + j
        sort = torch.argsort(key)
        return i.index_select(0, sort), j.index_select(0, sort), shifts.index_select(0, sort)
