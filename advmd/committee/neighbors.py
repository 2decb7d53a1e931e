"""Pair finding for finite and periodic systems (TorchScript-compatible).

Pairs are found on detached coordinates in row blocks, so peak memory is
``O(block * N)`` distances, never an ``N x N x features`` tensor. The
periodic shift of each pair is a constant of the search; displacement vectors
are rebuilt afterwards with gradients flowing through the positions only.

Periodic cells follow OpenMM's *reduced form*: rows are the box vectors
``a = (ax, 0, 0)``, ``b = (bx, by, 0)``, ``c = (cx, cy, cz)`` (lower triangular),
with the cutoff at most half the smallest perpendicular box width, so the
minimum image is unique. Orthorhombic boxes are the special case of a
diagonal cell.
"""

from typing import Optional, Tuple

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
    block_size: int = 512,
    structure_index: Optional[Tensor] = None,
    half: bool = False,
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

    Returns
    -------
    i, j : Tensor, shape (P,), dtype int64
        Both orderings of every pair, or only ``i < j`` with ``half=True``.
    shifts : Tensor, shape (P, 3), unit Angstrom
        Constant periodic shifts, so that ``positions[j] - positions[i] + shifts``
        is the minimum-image displacement (zeros without a cell).
    """
    with torch.no_grad():
        pos = positions.detach()
        n = pos.shape[0]
        cutoff2 = cutoff * cutoff
        rows = []
        cols = []
        shift_blocks = []
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            raw = pos.unsqueeze(0) - pos[start:stop].unsqueeze(1)
            if cell is not None:
                wrapped = minimum_image(raw, cell)
            else:
                wrapped = raw
            within = (wrapped * wrapped).sum(-1) < cutoff2
            if structure_index is not None:
                within = within & (structure_index[start:stop].unsqueeze(1) == structure_index.unsqueeze(0))
            pair_index = torch.nonzero(within)
            local_i = pair_index[:, 0]
            j = pair_index[:, 1]
            i = local_i + start
            keep = j > i if half else i != j
            local_i = local_i[keep]
            i = i[keep]
            j = j[keep]
            rows.append(i)
            cols.append(j)
            if cell is not None:
                shift_blocks.append(wrapped[local_i, j] - raw[local_i, j])
            else:
                shift_blocks.append(torch.zeros((i.shape[0], 3), dtype=pos.dtype, device=pos.device))
        if len(rows) == 0:
            empty = torch.zeros((0,), dtype=torch.long, device=pos.device)
            return empty, empty, torch.zeros((0, 3), dtype=pos.dtype, device=pos.device)
        return torch.cat(rows), torch.cat(cols), torch.cat(shift_blocks)
