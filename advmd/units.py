"""Unit conventions of advmd, and the only place where units are converted.

advmd models and datasets work in **Angstrom and eV** (the convention of
extended XYZ, ASE and most ML-potential tools). OpenMM works in **nm, kJ/mol
and ps**. Every conversion between the two happens through the constants of
this module, at the engine boundary (:mod:`advmd.openmm`) and nowhere else.

The constants are exact to double precision under the 2019 SI redefinition
(CODATA 2018): ``1 eV = e * N_A J/mol``. ASE's default unit table is
CODATA 2014, which differs from these by about 1e-8 relative;
``ase.units.create_units("2018")`` matches them exactly.

Examples
--------
>>> from advmd import units
>>> round(1.0 * units.EV_TO_KJ_PER_MOL, 6)
96.485332
>>> units.NM_TO_ANGSTROM
10.0
"""

from __future__ import annotations

#: Elementary charge in coulomb (exact, SI 2019).
ELEMENTARY_CHARGE_C = 1.602176634e-19
#: Avogadro constant in 1/mol (exact, SI 2019).
AVOGADRO_PER_MOL = 6.02214076e23
#: Boltzmann constant in eV/K (exact, SI 2019: 1.380649e-23 J/K / e).
BOLTZMANN_EV_PER_K = 1.380649e-23 / ELEMENTARY_CHARGE_C

#: kJ/mol per eV.
EV_TO_KJ_PER_MOL = ELEMENTARY_CHARGE_C * AVOGADRO_PER_MOL / 1000.0
#: eV per kJ/mol.
KJ_PER_MOL_TO_EV = 1.0 / EV_TO_KJ_PER_MOL
#: Angstrom per nm.
NM_TO_ANGSTROM = 10.0
#: nm per Angstrom.
ANGSTROM_TO_NM = 0.1
#: (kJ/mol/nm) per (eV/Angstrom): force conversion from model to OpenMM units.
EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM
#: eV per hartree (CODATA 2018).
HARTREE_TO_EV = 27.211386245988
#: Angstrom per bohr (CODATA 2018).
BOHR_TO_ANGSTROM = 0.529177210903
#: (eV/Angstrom) per (hartree/bohr): force conversion from atomic units.
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM = HARTREE_TO_EV / BOHR_TO_ANGSTROM
#: kcal/mol per eV (for reports that compare with the paper, which uses kcal/mol).
EV_TO_KCAL_PER_MOL = EV_TO_KJ_PER_MOL / 4.184


def kt_ev(temperature_k: float) -> float:
    """Thermal energy kT in eV.

    Parameters
    ----------
    temperature_k : float, unit K
        Absolute temperature; must be positive.

    Returns
    -------
    float, unit eV
    """
    if not temperature_k > 0:
        raise ValueError(f"temperature_k must be > 0 K, got {temperature_k!r}")
    return BOLTZMANN_EV_PER_K * temperature_k
