"""TOML job configuration: defaults merged with a user file; unknown sections or keys are errors."""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple, Union

__all__ = ["merge_config"]


def merge_config(
    defaults: Dict[str, Dict[str, Any]],
    source: Union[str, os.PathLike, Dict[str, Any]],
    path_keys: Iterable[Tuple[str, str]] = (),
    example: str = "",
) -> Dict[str, Dict[str, Any]]:
    """Merge a TOML file (or dict) over ``defaults``.

    Parameters
    ----------
    defaults : dict of sections
    source : path of a TOML file, or a dict of the same shape
    path_keys : (section, key) pairs holding file paths; relative paths are taken
        relative to the config file (URLs such as ``postgresql://`` are kept).
    example : name of the commented example file, for error messages.
    """
    base = Path(".")
    if isinstance(source, dict):
        given = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"config file {str(path)!r} does not exist" + (f"; see advmd/resources/{example}" if example else "")
            )
        try:
            given = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from error
        base = path.parent
    config = copy.deepcopy(defaults)
    for section, values in given.items():
        if section not in config:
            raise ValueError(f"config: unknown section [{section}]; valid sections are {sorted(config)}")
        if not isinstance(values, dict):
            raise ValueError(f"config: [{section}] must be a table of keys")
        for key, value in values.items():
            if key not in config[section]:
                raise ValueError(f"config: unknown key {key!r} in [{section}]; valid keys are {sorted(config[section])}")
            config[section][key] = value
    for section, key in path_keys:
        value = config[section][key]
        if value and not str(value).startswith(("postgresql://", "postgres://")) and not Path(value).is_absolute():
            config[section][key] = str(base / value)
    return config
