"""Reweighting biased samples recovers the unbiased distribution (exact Metropolis sampling of a 1D double well)."""

import math
import warnings

import numpy as np
import pytest

from advmd.enhanced import (
    ReweightingWarning,
    effective_sample_size,
    free_energy_surface,
    reweighting_log_weights,
    weighted_average,
)
from advmd.enhanced.reweighting import GAS_CONSTANT_KJ_PER_MOL_K

TEMPERATURE = 300.0
KT = 8.314462618e-3 * TEMPERATURE  # kJ/mol, CODATA 2018 gas constant (not the module's, so a wrong one fails)


def test_the_gas_constant_is_codata_2018():
    assert GAS_CONSTANT_KJ_PER_MOL_K == pytest.approx(8.314462618e-3, rel=1e-10)


def potential(x):
    return 5.0 * KT * (x**2 - 1.0) ** 2  # barrier of 5 kT at x = 0


def bias(x):
    return -4.0 * KT * np.exp(-(x**2) / (2 * 0.35**2))  # fills most of the barrier: an uncertainty-bias-like well


def metropolis(energy, chains=400, steps=3000, burn=500, thin=5, step=0.4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=chains)
    e = energy(x)
    samples = []
    for k in range(steps):
        trial = x + rng.uniform(-step, step, size=chains)
        et = energy(trial)
        accept = np.log(rng.random(chains)) < -(et - e) / KT
        x = np.where(accept, trial, x)
        e = np.where(accept, et, e)
        if k >= burn and k % thin == 0:
            samples.append(x.copy())
    return np.concatenate(samples)


def exact_bin_probabilities(edges):
    fine = np.linspace(edges[0], edges[-1], 200001)
    density = np.exp(-potential(fine) / KT)
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(fine))])
    at_edges = np.interp(edges, fine, cumulative)
    return np.diff(at_edges) / cumulative[-1]


def test_reweighted_biased_samples_recover_the_unbiased_distribution():
    x = metropolis(lambda v: potential(v) + bias(v))
    surface = free_energy_surface(x, bias(x), TEMPERATURE, bins=30, ranges=[(-1.8, 1.8)])
    exact = exact_bin_probabilities(surface.edges[0])
    p = surface.probability
    # binomial error per bin from the effective sample size (thinned frames are nearly independent): within 5 sigma
    sigma = np.sqrt(exact * (1 - exact) / surface.ess)
    assert np.all(np.abs(p - exact) < 5 * sigma + 1e-5)
    # the biased histogram alone is far off in the barrier: the test can tell the difference
    raw = free_energy_surface(x, None, TEMPERATURE, bins=30, ranges=[(-1.8, 1.8)])
    middle = 15
    assert raw.probability[middle] > 5 * exact[middle]
    assert abs(p[middle] - exact[middle]) < 0.3 * exact[middle]
    # free-energy barrier from the reweighted surface: 5 kT (bins next to the top lie a little lower) within 0.3 kT
    barrier = (surface.free_energy[middle - 1 : middle + 1].mean() - np.nanmin(surface.free_energy)) / KT
    assert barrier == pytest.approx(5.0, abs=0.3)
    assert 0.2 < surface.ess_fraction < 1.0


def test_weighted_average_of_x_squared_matches_quadrature():
    x = metropolis(lambda v: potential(v) + bias(v), seed=1)
    estimate = weighted_average(x**2, reweighting_log_weights(bias(x), TEMPERATURE))
    fine = np.linspace(-3, 3, 200001)
    density = np.exp(-potential(fine) / KT)
    exact = float(np.sum(fine**2 * density) / np.sum(density))
    assert estimate == pytest.approx(exact, rel=0.01)


def test_weights_are_normalised_shift_invariant_and_never_overflow():
    rng = np.random.default_rng(3)
    bias_kj = rng.normal(size=50) * 10.0
    lw = reweighting_log_weights(bias_kj, TEMPERATURE)
    assert np.exp(lw).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(reweighting_log_weights(bias_kj + 1e6, TEMPERATURE), lw, atol=1e-9)
    assert effective_sample_size(np.zeros(40)) == pytest.approx(40.0)
    assert effective_sample_size(lw + 123.0) == pytest.approx(effective_sample_size(lw))


def test_a_dominating_frame_warns_about_the_effective_sample_size():
    cv = np.linspace(-3, 3, 200)
    bias_kj = np.zeros(200)
    bias_kj[7] = 100.0 * KT  # one frame carries all the weight
    with pytest.warns(ReweightingWarning, match="effective sample size of 1.0 of 200"):
        surface = free_energy_surface(cv, bias_kj, TEMPERATURE, bins=10)
    assert surface.ess == pytest.approx(1.0)
    assert surface.low_ess_bins >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        free_energy_surface(cv, np.zeros(200), TEMPERATURE, bins=10)


def test_two_dimensional_surface_of_independent_cvs_is_the_sum_of_one_dimensional_ones():
    rng = np.random.default_rng(4)
    cv = np.stack([rng.normal(0, 1, 50000), rng.uniform(-math.pi, math.pi, 50000)], axis=1)
    surface = free_energy_surface(cv, None, TEMPERATURE, bins=[12, 4], ranges=[(-3, 3), (-math.pi, math.pi)], min_bin_ess=0)
    one = free_energy_surface(cv[:, 0], None, TEMPERATURE, bins=12, ranges=[(-3, 3)], min_bin_ess=0)
    profile = -KT * np.log(surface.probability.sum(axis=1))
    np.testing.assert_allclose(profile - profile.min(), one.free_energy, atol=1e-9)
    # F(x, y) = F1(x) + F2(y) for independent CVs, up to sampling noise (>= 540 samples a bin: 0.1 kT a bin)
    ranges = [(-2, 2), (-math.pi, math.pi)]
    both = free_energy_surface(cv, None, TEMPERATURE, bins=[8, 4], ranges=ranges, min_bin_ess=0).free_energy
    f1 = free_energy_surface(cv[:, 0], None, TEMPERATURE, bins=8, ranges=ranges[:1], min_bin_ess=0).free_energy
    f2 = free_energy_surface(cv[:, 1], None, TEMPERATURE, bins=4, ranges=ranges[1:], min_bin_ess=0).free_energy
    total = f1[:, None] + f2[None, :]
    np.testing.assert_allclose(both - both.min(), total - total.min(), atol=0.3 * KT)
    assert np.ptp(both) > 1.2 * KT  # the Gaussian CV spans 1.5 kT over the range, 5x the tolerance


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: reweighting_log_weights([], TEMPERATURE), "no frames"),
        (lambda: reweighting_log_weights([0.0, np.nan], TEMPERATURE), r"bias_energy_kjmol\[1\] is nan"),
        (lambda: reweighting_log_weights([0.0], -1.0), "temperature_k must be > 0"),
        (lambda: free_energy_surface(np.zeros((5, 3)), None, TEMPERATURE), "d = 1 or 2"),
        (lambda: free_energy_surface(np.zeros(5), np.zeros(4), TEMPERATURE), "one per frame"),
        (lambda: free_energy_surface(np.zeros(5), None, TEMPERATURE, ranges=[(1, 0)]), "high > low"),
        (lambda: free_energy_surface(np.zeros(5), None, TEMPERATURE, bins=0), "bins must be"),
    ],
    ids=["empty", "nan", "temperature", "cv-shape", "lengths", "ranges", "bins"],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
