"""Any ASE calculator as a labeler (ASE already works in eV and Angstrom)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Set, Tuple, Union

import numpy as np

from advmd.labelers.base import Labeler

__all__ = ["ASECalculatorLabeler"]


class ASECalculatorLabeler(Labeler):
    """Wraps an ASE calculator (or a factory that makes one per structure).

    Parameters
    ----------
    calculator : ase Calculator, or callable returning one
        A factory is called for every structure (for calculators that keep
        per-system state).
    name : str
        Provenance name.
    settings : dict, optional
        Recorded with every label.
    elements : set of int, optional
        Atomic numbers the calculator supports (``None``: not checked).

    Periodic structures reach the calculator with their cell: ASE calculators handle ``pbc`` themselves.
    """

    periodic = True

    def __init__(
        self,
        calculator: Union[Any, Callable[[], Any]],
        name: str = "ase",
        settings: Optional[Dict[str, Any]] = None,
        elements: Optional[Set[int]] = None,
    ) -> None:
        self.calculator = calculator
        self.name = name
        self._settings = dict(settings or {})
        self.elements = set(elements) if elements is not None else None

    def settings(self) -> Dict[str, Any]:
        return dict(self._settings)

    def _make(self) -> Any:
        # A calculator instance is used as it is; a class (EMT) or any other callable makes one.
        instance = not isinstance(self.calculator, type)
        if instance and (hasattr(self.calculator, "get_potential_energy") or hasattr(self.calculator, "calculate")):
            return self.calculator
        return self.calculator()

    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        work = atoms.copy()
        work.calc = self._make()
        return float(work.get_potential_energy()), np.array(work.get_forces())
