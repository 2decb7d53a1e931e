"""Kohn-Sham DFT labels through PySCF (default BP86/def2-SVP, as the paper's ammonia data).

PySCF works in hartree and bohr; the conversion uses :mod:`advmd.units`. The
paper adds a D3 dispersion correction; this labeler does not (a D3 term would
come from a separate package).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from advmd import units
from advmd.labelers.base import Labeler, LabelingError

__all__ = ["PySCFLabeler"]


class PySCFLabeler(Labeler):
    """DFT (or Hartree-Fock with ``xc="HF"``) energies and analytic gradients.

    Parameters
    ----------
    xc : str
        Exchange-correlation functional understood by PySCF (``"BP86"``), or ``"HF"``.
    basis : str
        Basis set name (``"def2-SVP"``).
    charge : int
    spin : int
        2S (number of unpaired electrons); > 0 selects unrestricted KS.
    max_cycles : int
        SCF iterations before the structure is recorded as failed.
    conv_tol : float, unit hartree
    """

    name = "pyscf"
    elements = set(range(1, 87))

    def __init__(
        self,
        xc: str = "BP86",
        basis: str = "def2-SVP",
        charge: int = 0,
        spin: int = 0,
        max_cycles: int = 100,
        conv_tol: float = 1e-9,
    ) -> None:
        try:
            import pyscf  # noqa: F401
        except ImportError as error:
            raise ImportError("the DFT labeler needs PySCF: pip install pyscf") from error
        self.xc = xc
        self.basis = basis
        self.charge = int(charge)
        self.spin = int(spin)
        self.max_cycles = int(max_cycles)
        self.conv_tol = float(conv_tol)
        self.name = f"pyscf-{xc.lower()}/{basis.lower()}"

    def settings(self) -> Dict[str, Any]:
        import pyscf

        return {
            "xc": self.xc,
            "basis": self.basis,
            "charge": self.charge,
            "spin": self.spin,
            "max_cycles": self.max_cycles,
            "conv_tol": self.conv_tol,
            "dispersion": None,
            "pyscf_version": pyscf.__version__,
        }

    def _label_one(self, atoms: Any) -> Tuple[float, np.ndarray]:
        from pyscf import dft, gto, scf

        mol = gto.M(
            atom=[(int(z), tuple(p)) for z, p in zip(atoms.numbers, atoms.positions)],
            unit="Angstrom",
            basis=self.basis,
            charge=self.charge,
            spin=self.spin,
            verbose=0,
        )
        if self.xc.upper() == "HF":
            mf = scf.RHF(mol) if self.spin == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
            mf.xc = self.xc
        mf.max_cycle = self.max_cycles
        mf.conv_tol = self.conv_tol
        energy = mf.kernel()
        if not mf.converged:
            raise LabelingError(f"SCF did not converge in {self.max_cycles} cycles")
        gradient = mf.nuc_grad_method().kernel()
        return float(energy) * units.HARTREE_TO_EV, -np.asarray(gradient) * units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
