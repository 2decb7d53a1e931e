"""Unit conversions against ASE's and OpenMM's own constants."""

import ase.units
import pytest
from openmm import unit

from advmd import units

ASE_2018 = ase.units.create_units("2018")


def test_ev_to_kj_per_mol_matches_ase():
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(ASE_2018["eV"] / (ASE_2018["kJ"] / ASE_2018["mol"]), rel=1e-12)
    # ASE's default table is CODATA 2014: it differs from the exact SI value by about 8e-9.
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(ase.units.eV / (ase.units.kJ / ase.units.mol), rel=1e-7)


def test_ev_to_kj_per_mol_matches_openmm():
    ev = (1.0 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA).value_in_unit(unit.kilojoule_per_mole)
    assert units.EV_TO_KJ_PER_MOL == pytest.approx(ev, rel=1e-9)


def test_length_and_force_conversions_match_openmm():
    assert (1.0 * unit.nanometer).value_in_unit(unit.angstrom) == pytest.approx(units.NM_TO_ANGSTROM)
    ev_per_a = 1.0 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA / unit.angstrom
    assert ev_per_a.value_in_unit(unit.kilojoule_per_mole / unit.nanometer) == pytest.approx(
        units.EV_PER_ANGSTROM_TO_KJ_PER_MOL_NM, rel=1e-9
    )
    kj_per_mol = 1.0 * unit.kilojoule_per_mole / unit.AVOGADRO_CONSTANT_NA
    assert kj_per_mol.value_in_unit(unit.elementary_charge * unit.volt) == pytest.approx(units.KJ_PER_MOL_TO_EV, rel=1e-9)


def test_boltzmann_matches_ase():
    assert units.kt_ev(300.0) == pytest.approx(ASE_2018["kB"] * 300.0, rel=1e-12)
    assert units.EV_TO_KCAL_PER_MOL == pytest.approx(ASE_2018["eV"] / (ASE_2018["kcal"] / ASE_2018["mol"]), rel=1e-12)


def test_kt_rejects_nonpositive_temperature():
    with pytest.raises(ValueError, match="temperature_k must be > 0"):
        units.kt_ev(0.0)


def test_atomic_units_match_ase_2018():
    # ASE derives hartree and bohr from m_e, e, h, eps0: they differ from the listed CODATA values by ~1e-11.
    assert units.HARTREE_TO_EV == pytest.approx(ASE_2018["Hartree"], rel=1e-10)
    assert units.BOHR_TO_ANGSTROM == pytest.approx(ASE_2018["Bohr"], rel=1e-10)
    assert units.HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM == pytest.approx(ASE_2018["Hartree"] / ASE_2018["Bohr"], rel=1e-10)
