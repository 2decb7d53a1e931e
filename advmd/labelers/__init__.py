"""Reference methods that label structures with energies and forces (eV, eV/Angstrom).

Every labeler implements :class:`~advmd.labelers.base.Labeler`; :func:`make_labeler`
builds one by name. Optional backends (tblite, PySCF) are imported only when used.
"""

from typing import Any, Callable, Dict

from advmd.labelers.analytic import DoubleWell1D, DoubleWell2D
from advmd.labelers.ase_adapter import ASECalculatorLabeler
from advmd.labelers.base import Labeler, LabelingError, LabelResult
from advmd.labelers.openmm_ff import OpenMMLabeler

__all__ = [
    "ASECalculatorLabeler",
    "DoubleWell1D",
    "DoubleWell2D",
    "LABELERS",
    "LabelResult",
    "Labeler",
    "LabelingError",
    "OpenMMLabeler",
    "make_labeler",
]


def _xtb(**options: Any) -> Labeler:
    from advmd.labelers.xtb import TBLiteLabeler

    return TBLiteLabeler(**options)


def _dft(**options: Any) -> Labeler:
    from advmd.labelers.dft import PySCFLabeler

    return PySCFLabeler(**options)


def _amber14(topology: Any = None, **options: Any) -> Labeler:
    from advmd.systems import alanine_dipeptide, amber14_vacuum_system

    if topology is None:
        topology, _ = alanine_dipeptide()
    return OpenMMLabeler(amber14_vacuum_system(topology), topology, name="amber14", **options)


#: Labelers by name.
LABELERS: Dict[str, Callable[..., Labeler]] = {
    "amber14": _amber14,
    "xtb": _xtb,
    "dft": _dft,
    "double-well-2d": lambda **o: DoubleWell2D(**o),
    "double-well-1d": lambda **o: DoubleWell1D(**o),
}


def make_labeler(name: str, **options: Any) -> Labeler:
    """Build a labeler by name (``amber14``, ``xtb``, ``dft``, ``double-well-2d``, ``double-well-1d``)."""
    try:
        factory = LABELERS[name]
    except KeyError:
        raise ValueError(f"unknown labeler {name!r}; choose one of {sorted(LABELERS)}") from None
    try:
        return factory(**options)
    except TypeError as error:
        if "unexpected keyword argument" not in str(error):
            raise
        raise ValueError(f"labeler {name!r}: {str(error).split('() ', 1)[-1]} (an --option or [labeler] options key)") from None
