"""Committee statistics equal numpy computations with the named estimators."""

import numpy as np
import pytest
import torch

from advmd.committee import atomic_force_deviation, energy_variance, force_variance, max_force_deviation


def test_energy_variance_is_numpy_sample_variance(rng):
    energies = rng.normal(size=5)
    assert float(energy_variance(torch.tensor(energies))) == pytest.approx(np.var(energies, ddof=1), rel=1e-12)


def test_force_variance_is_eq7(rng):
    forces = rng.normal(size=(5, 7, 3))
    # Eq. 7: 1/(M-1) sum_m [ 1/(3n) sum_ij (F_mij - Fbar_ij)^2 ]  ==  mean over components of the ddof=1 variance
    expected = np.var(forces, axis=0, ddof=1).mean()
    assert float(force_variance(torch.tensor(forces))) == pytest.approx(expected, rel=1e-12)


def test_max_force_deviation_is_dpgen_population_rms(rng):
    forces = rng.normal(size=(4, 6, 3))
    per_atom = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    value, atom = max_force_deviation(torch.tensor(forces))
    np.testing.assert_allclose(atomic_force_deviation(torch.tensor(forces)).numpy(), per_atom, rtol=1e-12)
    assert float(value) == pytest.approx(per_atom.max(), rel=1e-12)
    assert int(atom) == int(per_atom.argmax())


def test_statistics_need_two_members():
    with pytest.raises(ValueError, match="at least 2 members, got M=1"):
        energy_variance(torch.zeros(1))
    with pytest.raises(ValueError, match="at least 2 members, got M=1"):
        force_variance(torch.zeros(1, 3, 3))
