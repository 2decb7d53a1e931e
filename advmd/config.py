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
            _check_type(section, key, config[section][key], value)
            config[section][key] = value
    for section, key in path_keys:
        value = config[section][key]
        if value and not str(value).startswith(("postgresql://", "postgres://")) and not Path(value).is_absolute():
            config[section][key] = str(base / value)
    return config


def _check_type(section: str, key: str, default: Any, value: Any) -> None:
    """A value of the default's kind (an integer where the default is one, any number for a float...).

    Settings whose default is ``""`` or ``None`` (unset, or set to a path, a number or a name) are checked
    by their own validation.
    """
    if default is None or (isinstance(default, str) and default == ""):
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, kind = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, kind = isinstance(value, dict), "a table"
    else:
        return
    if not ok:
        raise ValueError(f"config: [{section}] {key} must be {kind}, got {value!r}")
