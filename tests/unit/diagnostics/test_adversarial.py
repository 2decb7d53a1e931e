"""Adversarial directions (seed 000) on analytic models with known answers."""

import warnings

import numpy as np
import pytest
from ase import Atoms

from advmd.diagnostics import adversarial_direction, adversarial_directions, force_cosine, relaxation_error_growth
from advmd.labelers import Labeler


class Harmonic(Labeler):
    """E = k/2 |R - C|^2 + e0 (eV, Angstrom): an analytic model with a known minimum."""

    def __init__(self, k, center, e0=0.0, name="harmonic"):
        self.k, self.center, self.e0, self.name = float(k), np.asarray(center, float), float(e0), name

    def _label_one(self, atoms):
        d = atoms.positions - self.center
        return 0.5 * self.k * float((d**2).sum()) + self.e0, -self.k * d


CENTER = np.array([[0.0, 0.0, 0.0], [1.0, 0.2, -0.3], [-0.5, 1.1, 0.4]])


def structures(n, scale=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return [Atoms("HHH", positions=CENTER + scale * rng.normal(size=CENTER.shape)) for _ in range(n)]


def labels(labeler, atoms_list):
    result = labeler.label(atoms_list)
    return result.energies, result.forces


def test_direction_is_the_gradient_of_the_squared_energy_error():
    reference = Harmonic(2.0, CENTER)
    approximate = Harmonic(3.0, CENTER + 0.1, e0=0.05)
    (atoms,) = structures(1)
    (e_acc,), (f_acc,) = labels(reference, [atoms])
    (e_app,), (f_app,) = labels(approximate, [atoms])
    direction = adversarial_direction(e_acc, f_acc, e_app, f_app)

    def loss(positions):
        probe = Atoms("HHH", positions=positions)
        return (reference._label_one(probe)[0] - approximate._label_one(probe)[0]) ** 2

    h = 1e-5
    numeric = np.zeros_like(atoms.positions)
    for i in range(3):
        for j in range(3):
            plus, minus = atoms.positions.copy(), atoms.positions.copy()
            plus[i, j] += h
            minus[i, j] -= h
            numeric[i, j] = (loss(plus) - loss(minus)) / (2 * h)
    np.testing.assert_allclose(direction, numeric, rtol=1e-6, atol=1e-9)


def test_a_stiffer_copy_of_a_harmonic_well_points_against_its_own_force():
    reference = Harmonic(2.0, CENTER)
    for k_app in (0.5, 3.0):  # softer or stiffer: A always points away from the shared minimum
        approximate = Harmonic(k_app, CENTER)
        atoms_list = structures(6)
        result = adversarial_directions(*labels(reference, atoms_list), *labels(approximate, atoms_list), align="none")
        np.testing.assert_allclose(result.cosine, -1.0, atol=1e-12)


def test_a_shifted_minimum_matches_the_closed_form_cosine():
    reference = Harmonic(2.0, CENTER)
    approximate = Harmonic(2.0, CENTER + np.array([0.3, 0.0, 0.0]))
    atoms_list = structures(20, scale=0.02)  # near the reference minimum, F_acc is small
    result = adversarial_directions(*labels(reference, atoms_list), *labels(approximate, atoms_list), align="none")
    # closed form with d = R - C: E_acc - E_app = k s.d - k|s|^2/2, F_app - F_acc = k s, F_app = -k (d - s)
    for k, atoms in enumerate(atoms_list):
        d = atoms.positions - CENTER
        s = np.zeros_like(d)
        s[:, 0] = 0.3
        error = 2.0 * float((s * d).sum()) - 0.5 * 2.0 * float((s**2).sum())
        f_app = -2.0 * (d - s)
        expected = force_cosine(2 * error * (2.0 * s), f_app)
        assert result.cosine[k] == pytest.approx(expected, abs=1e-12)
    reference_energies = labels(reference, atoms_list)[0]  # the accurate energies, relative to their lowest
    np.testing.assert_allclose(result.energy_above_minimum, reference_energies - reference_energies.min(), atol=1e-12)


def test_identical_models_have_no_direction_and_an_undefined_cosine_without_division_by_zero():
    model = Harmonic(2.0, CENTER)
    atoms_list = structures(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = adversarial_directions(*labels(model, atoms_list), *labels(model, atoms_list))
        summary = result.summary()
    assert all(np.all(d == 0) for d in result.directions)
    assert np.all(np.isnan(result.cosine))
    assert summary["undefined_cosine"] == 4 and "cosine_median" not in summary
    assert summary["energy_rmse_ev"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(force_cosine(np.zeros(6), np.ones(6)))
        assert force_cosine(np.ones(6), 2 * np.ones(6)) == pytest.approx(1.0)


def test_mean_alignment_removes_a_constant_energy_offset():
    reference = Harmonic(2.0, CENTER)
    approximate = Harmonic(2.5, CENTER + 0.05)
    shifted = Harmonic(2.5, CENTER + 0.05, e0=-1234.5)
    atoms_list = structures(10)
    plain = adversarial_directions(*labels(reference, atoms_list), *labels(approximate, atoms_list))
    offset = adversarial_directions(*labels(reference, atoms_list), *labels(shifted, atoms_list))
    np.testing.assert_allclose(offset.cosine, plain.cosine, atol=1e-9)
    np.testing.assert_allclose(offset.energy_error, plain.energy_error, atol=1e-9)
    assert offset.offset - plain.offset == pytest.approx(1234.5)
    raw = adversarial_directions(*labels(reference, atoms_list), *labels(shifted, atoms_list), align="none")
    assert np.all(raw.energy_error > 1000)


def test_mean_alignment_refuses_structures_of_different_compositions():
    """Energy zeros differ per atom: one constant across 3- and 4-atom structures would leave an error of 100 eV
    per atom (the reviewer's case) and flip directions, so align='mean' refuses; align='none' still runs."""
    small = [Atoms("HHH", positions=CENTER + 0.01 * k) for k in range(2)]
    large = [Atoms("HHHH", positions=np.vstack([CENTER, [[2.0, 0.0, 0.0]]]) + 0.01 * k) for k in range(2)]
    e_acc = [0.0, 0.0, 0.0, 0.0]
    e_app = [-100.0 * len(a) for a in small + large]  # a per-atom zero shift
    forces = [np.zeros((len(a), 3)) for a in small + large]
    with pytest.raises(ValueError, match="align='mean' .* 2 compositions \\(3 atoms, 4 atoms\\)"):
        adversarial_directions(e_acc, forces, e_app, forces)
    with pytest.raises(ValueError, match="2 compositions"):  # same size, other elements
        adversarial_directions([0.0, 0.0], forces[:2], [0.0, 1.0], forces[:2], numbers=[[1, 1, 1], [1, 1, 8]])
    assert adversarial_directions(e_acc, forces, e_app, forces, align="none").energy_error.tolist() == [300, 300, 400, 400]
    with pytest.raises(ValueError, match="2 compositions"):
        relaxation_error_growth(small + large, Harmonic(1.0, CENTER), Harmonic(1.0, CENTER), steps=1)


def test_relaxation_follows_closed_form_gradient_descent_and_converges_to_the_model_minimum_error():
    k_acc, k_app, rate = 2.0, 3.0, 0.05
    shift = np.array([0.2, -0.1, 0.05])
    reference = Harmonic(k_acc, CENTER)
    approximate = Harmonic(k_app, CENTER + shift)
    atoms_list = structures(3, scale=0.2, seed=3)
    steps = 12
    result = relaxation_error_growth(
        atoms_list, approximate, reference, steps=steps, step_size=rate, max_displacement=10.0, align="none"
    )
    for i, atoms in enumerate(atoms_list):
        for k in range(steps + 1):
            # R_k - (C + s) = (1 - rate k_app)^k (R_0 - (C + s))
            r = CENTER + shift + (1 - rate * k_app) ** k * (atoms.positions - CENTER - shift)
            e_acc = 0.5 * k_acc * ((r - CENTER) ** 2).sum()
            e_app = 0.5 * k_app * ((r - CENTER - shift) ** 2).sum()
            assert result.abs_energy_error[i, k] == pytest.approx(abs(e_acc - e_app), rel=1e-10, abs=1e-12)
    long = relaxation_error_growth(
        atoms_list, approximate, reference, steps=200, step_size=rate, max_displacement=10.0, align="none"
    )
    # at the model's minimum the error is the reference energy there: k_acc/2 * N |s|^2
    np.testing.assert_allclose(long.abs_energy_error[:, -1], 0.5 * k_acc * 3 * (shift**2).sum(), rtol=1e-6)
    assert long.summary()["steps"] == 200


def test_relaxation_caps_the_largest_atomic_move_and_stays_exact_for_an_exact_model():
    centre = np.zeros((1, 3))
    model = Harmonic(50.0, centre)
    atoms_list = [Atoms("H", positions=[[0.5, -0.3, 0.2]]), Atoms("H", positions=[[0.0, 0.4, 0.0]])]
    result = relaxation_error_growth(atoms_list, model, model, steps=3, step_size=1.0, max_displacement=0.02)
    np.testing.assert_allclose(result.abs_energy_error, 0.0, atol=1e-12)
    # one atom, moving straight to the minimum by exactly the cap each step: rms over 3 components = k * 0.02 / sqrt(3)
    expected = np.arange(4) * 0.02 / np.sqrt(3)
    np.testing.assert_allclose(result.displacement, np.stack([expected, expected]), rtol=1e-12)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: adversarial_directions([0.0], [np.zeros((1, 3))], [0.0, 1.0], [np.zeros((1, 3))]), "one of each per structure"),
        (
            lambda: adversarial_directions([np.nan], [np.zeros((1, 3))], [0.0], [np.zeros((1, 3))]),
            r"reference_energies\[0\] is nan",
        ),
        (lambda: adversarial_directions([], [], [], []), "at least one"),
        (lambda: adversarial_directions([0.0], [np.zeros((1, 3))], [0.0], [np.zeros((1, 3))], align="median"), "align must be"),
        (lambda: adversarial_direction(0.0, np.zeros((2, 3)), 0.0, np.zeros((3, 3))), "same structure"),
        (lambda: relaxation_error_growth(structures(1), Harmonic(1, CENTER), Harmonic(1, CENTER), steps=0), "steps must be"),
        (lambda: relaxation_error_growth(structures(1), Harmonic(1, CENTER), Harmonic(1, CENTER), step_size=-1), "step_size"),
        (lambda: relaxation_error_growth([], Harmonic(1, CENTER), Harmonic(1, CENTER)), "no structures"),
    ],
    ids=["lengths", "nan", "empty", "align", "shapes", "steps", "step-size", "no-structures"],
)
def test_bad_input_raises_named_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
