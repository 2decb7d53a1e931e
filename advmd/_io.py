"""Crash-safe file replacement: write a temporary file, fsync it, rename it over the target, fsync the folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

__all__ = ["durable_replace", "write_text_atomic"]


def durable_replace(tmp: Union[str, os.PathLike], path: Union[str, os.PathLike]) -> None:
    """Rename ``tmp`` over ``path`` so that a kill, an OS crash or a power loss leaves the old or the new file, whole."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(str(Path(path).parent), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_text_atomic(path: Union[str, os.PathLike], text: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    durable_replace(tmp, path)
