"""Performance suite: ``advmd bench`` measures in one run and prints ratios.

Systems: alanine dipeptide (22 atoms, open boundaries) and periodic water-like
boxes of 648 and 3000 atoms (:func:`advmd.systems.water_box`). Model: a SchNet
committee, M=5, 64 features, 32 radial basis functions, 3 interactions, cutoff
5 Angstrom, float32 (random weights: speed does not depend on their values).

Ratios (the performance issue's list):

1. OpenMM step / raw call of the same frozen module (TorchForce and PythonForce);
2. committee / one member (energy and forces) at each size; also the committee through
   ``torch.compile`` (:class:`~advmd.committee.compiled.CompiledCommitteePotential`, the PythonForce
   ``compile=True`` path) against the TorchScript committee;
3. step with sigma logged every step (UncertaintyReporter, interval 1) / plain step, TorchForce and
   PythonForce (plain reporter, and ``every_step=True``: the force's own evaluations, no extra call);
4. sigma_F (HAL) bias step / mean-only step;
5. t(3000) / t(648) for one member;
6. advmd OpenMM MD / the same potential in ASE's Langevin (a Python loop), steps per second;
7. looped / batched dihedral attacks;
8. peak memory of each configuration, each in a fresh process (resident set size, with
   the process's baseline after imports and model set-up).

Times are medians over repeats of the mean over a few calls; the functions of a ratio are
timed interleaved, repeat by repeat, and the ratio is the median of per-repeat ratios. An A/A control
(the raw call against itself) shows how far the machine's noise moves a ratio: on the 2-vCPU
development machine single repeats scatter by +-5% (quartiles) and the median of 25 by about 2%.
Speed is never asserted by tests; tests guard the correctness of every fast path.
"""

from __future__ import annotations

import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np
import torch

from advmd import units

__all__ = ["BenchRow", "run_benchmarks", "format_rows", "SIZES"]

SIZES = (22, 648, 3000)
HYPER = dict(species=[1, 6, 7, 8], n_features=64, n_rbf=32, n_interactions=3, cutoff=5.0, seed=0)
N_MEMBERS = 5
HAL_STRENGTH_ANGSTROM = 0.05


@dataclass
class BenchRow:
    """One printed line: a time, a ratio or a memory figure, with its target when it has one."""

    section: str
    name: str
    value: float
    unit: str
    target: str = ""

    def verdict(self) -> str:
        if not self.target:
            return ""
        op, limit = self.target.split()
        ok = self.value <= float(limit) if op == "<=" else self.value >= float(limit)
        return "ok" if ok else "MISSED"


class _Ratios(list):
    """Median ratio of each function to the first (a list), and :meth:`of` any two of them."""

    def __init__(self, samples: List[List[float]]) -> None:
        super().__init__(statistics.median(b / a for a, b in zip(samples[0], x)) for x in samples)
        self.samples = samples

    def of(self, numerator: int, denominator: int) -> float:
        """Median over repeats of time[numerator] / time[denominator] (not a ratio of two medians)."""
        return statistics.median(b / a for a, b in zip(self.samples[denominator], self.samples[numerator]))


def _paired(fns: Sequence[Callable[[], object]], repeats: int, budget_s: float = 0.1) -> Tuple[List[float], "_Ratios"]:
    """Interleaved timing of several functions: (median time of each, median ratio of each to the first).

    Each repeat times every function in turn (enough calls to fill ``budget_s``), so slow
    drifts of the machine's speed (a shared host) affect the numerator and denominator of a
    ratio alike; the ratio printed is the median of the per-repeat ratios (``ratios.of(i, j)``
    for two functions neither of which is the first).
    """
    inner = []
    for fn in fns:
        fn()
        fn()
        start = time.perf_counter()
        fn()
        inner.append(max(1, int(budget_s / max(time.perf_counter() - start, 1e-6))))
    samples: List[List[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(inner[k]):
                fn()
            samples[k].append((time.perf_counter() - start) / inner[k])
    medians = [statistics.median(x) for x in samples]
    return medians, _Ratios(samples)


def system(n_atoms: int) -> Tuple[object, object, Optional[np.ndarray], torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(topology, positions with units, box in Angstrom or None, positions (A), numbers, cell (A) or None)."""
    from openmm import unit

    from advmd.systems import alanine_dipeptide, water_box

    if n_atoms == 22:
        topology, positions = alanine_dipeptide()
        box = None
    elif n_atoms % 3 == 0:
        topology, positions, box = water_box(n_atoms // 3)
    else:
        raise ValueError(f"benchmark sizes are 22 (alanine dipeptide) or multiples of 3 (water boxes), got {n_atoms}")
    xyz = torch.tensor(np.asarray(positions.value_in_unit(unit.nanometer)) * 10.0, dtype=torch.float32)
    numbers = torch.tensor([a.element.atomic_number for a in topology.atoms()])
    cell = None if box is None else torch.tensor(box, dtype=torch.float32)
    return topology, positions, box, xyz, numbers, cell


def models() -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(committee M=5, its first member alone), eager, float32."""
    from advmd.committee import SchNetCommittee

    committee = SchNetCommittee(n_members=N_MEMBERS, **HYPER).eval()
    return committee, committee.select_members([0]).eval()


def potential(committee: torch.nn.Module, form: str = "hal") -> torch.nn.Module:
    from advmd.committee import CommitteePotential, make_bias

    return CommitteePotential(committee, make_bias(form, committee.n_members)).eval()


def member_energy_forces(
    member: torch.jit.ScriptModule, positions: torch.Tensor, numbers: torch.Tensor, cell: Optional[torch.Tensor]
):
    """One member's energy and forces by one backward pass (the baseline of a committee)."""
    x = positions.unsqueeze(0).requires_grad_(True)
    energy = member(x, numbers, cell)
    (gradient,) = torch.autograd.grad(energy.sum(), x)
    return energy.detach(), -gradient


def _simulation(topology, positions, model, backend: str, strength_nm: float, platform: str):
    import openmm
    from openmm import app, unit

    from advmd.openmm import create_system, parameter_names
    from advmd.openmm.platforms import choose_platform

    system_ = create_system(topology, model, backend=backend, bias_strength=0.0)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.5 * unit.femtoseconds)
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(topology, system_, integrator, choose_platform(system_, platform))
    simulation.context.setPositions(positions)
    simulation.context.setParameter(parameter_names()["bias_strength"], strength_nm)
    return simulation


def measure_size(n_atoms: int, repeats: int, platform: str, rows: List[BenchRow]) -> Dict[str, float]:
    """Items 1, 2 and 4 at one size; returns the raw times (seconds)."""
    from advmd.committee.compiled import CompiledCommitteePotential
    from advmd.openmm.forces import _PeriodicTorchForceModule, _TorchForceModule

    topology, positions, box, xyz, numbers, cell = system(n_atoms)
    committee, member = models()
    section = f"{n_atoms} atoms"
    t: Dict[str, float] = {}
    zero = torch.tensor(0.0)
    scripted_member = torch.jit.freeze(torch.jit.script(member))
    scripted_potential = torch.jit.freeze(torch.jit.script(potential(committee)))
    fast_member = torch.jit.freeze(torch.jit.script(member.tabulated()))
    fast_potential = torch.jit.freeze(torch.jit.script(potential(committee.tabulated())))
    # The committee through torch.compile (PythonForce compile=True); compiled during _paired's warm-up calls.
    compiled_potential = CompiledCommitteePotential(potential(committee))
    (t["member"], t["committee"], t["member_tab"], t["committee_tab"], t["committee_compiled"]), ratios = _paired(
        [
            lambda: member_energy_forces(scripted_member, xyz, numbers, cell),
            lambda: scripted_potential(xyz, numbers, cell, zero),
            lambda: member_energy_forces(fast_member, xyz, numbers, cell),
            lambda: fast_potential(xyz, numbers, cell, zero),
            lambda: compiled_potential(xyz, numbers, cell, zero),
        ],
        repeats,
    )
    rows.append(BenchRow(section, "one member energy+forces", t["member"] * 1e3, "ms"))
    rows.append(BenchRow(section, "committee M=5 energy+forces+statistics", t["committee"] * 1e3, "ms"))
    limit = "<= 2.0" if n_atoms <= 100 else "<= 3.0"
    rows.append(BenchRow(section, "ratio committee / one member", ratios[1], "x", limit))
    rows.append(BenchRow(section, "tabulated filters: one member", t["member_tab"] * 1e3, "ms"))
    rows.append(BenchRow(section, "tabulated filters: committee M=5", t["committee_tab"] * 1e3, "ms"))
    rows.append(BenchRow(section, "tabulated: ratio committee / one member", ratios.of(3, 2), "x", limit))
    rows.append(BenchRow(section, "tabulated / exact committee time", ratios.of(3, 1), "x"))
    rows.append(BenchRow(section, "torch.compile: committee M=5 (exact filters)", t["committee_compiled"] * 1e3, "ms"))
    rows.append(BenchRow(section, "torch.compile / TorchScript committee time", ratios.of(4, 1), "x"))

    # The raw call: the very module TorchForce runs (OpenMM units in and out), frozen, called directly.
    boundary_cls = _TorchForceModule if box is None else _PeriodicTorchForceModule
    # Strength factor nm -> Angstrom (HAL's length unit), as create_system gives it; the raw calls pass strength 0.
    boundary = boundary_cls(torch.jit.script(potential(committee)), numbers, None, numbers.shape[0], units.NM_TO_ANGSTROM)
    boundary = torch.jit.freeze(torch.jit.script(boundary.eval()))
    # Two position sets, alternated: the module returns its kept result for inputs equal to its last ones
    # (a report, then the next step, at the same positions), and an MD step always brings new positions.
    start_nm = xyz.to(torch.float64) / 10.0
    position_sets = [start_nm.requires_grad_(True), (start_nm + 1e-5).requires_grad_(True)]
    box_nm = None if box is None else torch.tensor(box / 10.0, dtype=torch.float64)
    parameters = [torch.tensor(0.0, dtype=torch.float64) for _ in range(6)]
    calls = itertools.count()

    def raw():
        positions_nm = position_sets[next(calls) % 2]
        if box_nm is None:
            return boundary(positions_nm, *parameters)
        return boundary(positions_nm, box_nm, *parameters)

    backends = ("torch", "python") if n_atoms <= 100 else ("torch",)
    simulations = [_simulation(topology, positions, potential(committee), b, 0.0, platform) for b in backends]
    hal = _simulation(topology, positions, potential(committee), "torch", HAL_STRENGTH_ANGSTROM / 10.0, platform)
    chosen = simulations[0].context.getPlatform().getName()
    # With "auto" a committee-only System runs on the Reference platform; the CPU platform's steps are timed too.
    others = []
    if n_atoms <= 100 and chosen != "CPU":
        others = [_simulation(topology, positions, potential(committee), b, 0.0, "CPU") for b in backends]
    for simulation in simulations + [hal] + others:
        simulation.step(2)
    steps = [lambda sim=sim: sim.step(1) for sim in simulations + [hal] + others]
    # The raw call twice: their ratio (an A/A control) shows how far this machine's noise moves a ratio.
    medians, ratios = _paired([raw, raw] + steps, repeats if n_atoms <= 100 else max(1, repeats // 2))
    t["raw"] = medians[0]
    rows.append(BenchRow(section, "A/A control: raw call / the same raw call", ratios[1], "x"))
    first = 2  # index of the first simulation in medians and ratios
    for k, backend in enumerate(backends):
        t[f"step_{backend}"] = medians[first + k]
        label = "TorchForce" if backend == "torch" else "PythonForce"
        rows.append(BenchRow(section, f"OpenMM step ({chosen}), {label}, mean only", medians[first + k] * 1e3, "ms"))
        rows.append(BenchRow(section, f"ratio {label} step / raw call", ratios[first + k], "x", "<= 1.05"))
    hal_index = first + len(backends)
    t["step_hal"] = medians[hal_index]
    rows.append(BenchRow(section, f"OpenMM step ({chosen}), TorchForce, HAL sigma_F bias", t["step_hal"] * 1e3, "ms"))
    rows.append(BenchRow(section, "ratio sigma_F-bias step / mean-only step", ratios.of(hal_index, first), "x", "<= 2.0"))
    for k, backend in enumerate(backends if others else ()):
        label = "TorchForce" if backend == "torch" else "PythonForce"
        rows.append(BenchRow(section, f"CPU platform: ratio {label} step / raw call", ratios[hal_index + 1 + k], "x"))
    return t


def measure_scaling(small_n: int, big_n: int, repeats: int, rows: List[BenchRow]) -> None:
    """Item 5: one member's energy and forces at two sizes, timed interleaved (the same machine state)."""
    _, member = models()
    scripted = torch.jit.freeze(torch.jit.script(member))
    calls = []
    for n_atoms in (small_n, big_n):
        _, _, _, xyz, numbers, cell = system(n_atoms)
        calls.append(lambda xyz=xyz, numbers=numbers, cell=cell: member_energy_forces(scripted, xyz, numbers, cell))
    _, ratios = _paired(calls, repeats, 0.0)
    rows.append(
        BenchRow("scaling", f"one member t({big_n}) / t({small_n}) (atoms x{big_n / small_n:.2f})", ratios[1], "x", "<= 5.0")
    )


def measure_logging(repeats: int, platform: str, rows: List[BenchRow]) -> None:
    """Item 3: the UncertaintyReporter at interval 1 on alanine dipeptide, both force paths.

    Each report asks OpenMM for the energy and the statistics, which calls the force at the
    step's new positions; the next step calls it there again and both forces return their kept
    result. PythonForce with ``every_step=True``: the force records its own evaluations and the
    reporter writes them, with no force call of its own.
    """
    from advmd.openmm.reporters import UncertaintyReporter

    topology, positions, *_ = system(22)
    committee, _ = models()
    order = [("torch", False), ("torch", True), ("python", False), ("python", True), ("python", "report")]
    sims = {key: _simulation(topology, positions, potential(committee), key[0], 0.0, platform) for key in order}
    with tempfile.TemporaryDirectory() as tmp:
        sims[("torch", True)].reporters.append(UncertaintyReporter(Path(tmp) / "torch.csv", 1))
        sims[("python", True)].reporters.append(UncertaintyReporter(Path(tmp) / "python.csv", 1, every_step=True))
        sims[("python", "report")].reporters.append(UncertaintyReporter(Path(tmp) / "python-report.csv", 1))
        medians, ratios = _paired([lambda sim=sims[key]: sim.step(1) for key in order], repeats)
        for key in order:
            for reporter in sims[key].reporters:
                reporter.close()
    rows.append(BenchRow("22 atoms", "TorchForce step, sigma logged every step", medians[1] * 1e3, "ms"))
    rows.append(BenchRow("22 atoms", "ratio logged / plain step, TorchForce", ratios[1], "x", "<= 1.10"))
    rows.append(BenchRow("22 atoms", "PythonForce step, every_step log", medians[3] * 1e3, "ms"))
    rows.append(BenchRow("22 atoms", "ratio logged / plain step, PythonForce", ratios.of(3, 2), "x", "<= 1.10"))
    rows.append(BenchRow("22 atoms", "PythonForce step, reporter at interval 1", medians[4] * 1e3, "ms"))
    rows.append(BenchRow("22 atoms", "ratio reported / plain step, PythonForce", ratios.of(4, 2), "x", "<= 1.10"))


def measure_ase(repeats: int, platform: str, rows: List[BenchRow]) -> None:
    """Item 6: the same potential in ASE's Langevin (a Python loop over steps) against OpenMM."""
    from ase import Atoms, units
    from ase.md.langevin import Langevin

    from advmd.ase_calculator import CommitteeCalculator

    topology, positions, _, xyz, numbers, _ = system(22)
    committee, _ = models()
    atoms = Atoms(numbers=numbers.numpy(), positions=xyz.numpy().astype(float))
    atoms.calc = CommitteeCalculator(torch.jit.script(potential(committee)))
    dynamics = Langevin(
        atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, fixcm=False, rng=np.random.default_rng(1)
    )
    simulation = _simulation(topology, positions, potential(committee), "torch", 0.0, platform)
    (t_ase, t_openmm), (_, ratio) = _paired([lambda: dynamics.run(1), lambda: simulation.step(1)], repeats)
    rows.append(BenchRow("22 atoms", "ASE Langevin, steps per second", 1.0 / t_ase, "1/s"))
    rows.append(BenchRow("22 atoms", "OpenMM LangevinMiddle, steps per second", 1.0 / t_openmm, "1/s"))
    rows.append(BenchRow("22 atoms", "ratio OpenMM / ASE steps per second", 1.0 / ratio, "x", ">= 3.0"))


def measure_attacks(seeds: int, steps: int, repeats: int, rows: List[BenchRow]) -> None:
    """Item 7: phi/psi attacks on alanine dipeptide, all seeds in one batch against one at a time."""
    from advmd.attacks import AttackConfig, DihedralRotation, attack, peptide_dihedrals

    topology, _, _, xyz, numbers, _ = system(22)
    committee, _ = models()
    bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
    rotation = DihedralRotation(22, bonds, peptide_dihedrals(topology))
    rng = np.random.default_rng(0)
    starts = xyz.numpy()[None].astype(float) + rng.normal(scale=0.02, size=(seeds, 22, 3))
    config = AttackConfig(steps=steps, learning_rate=5e-3, init_std=0.01, seed=0)
    z = numbers.tolist()

    def batched():
        attack(committee, z, starts, rotation, config)

    def looped():
        for k in range(seeds):
            attack(committee, z, starts[k : k + 1], rotation, config)

    (t_batched, t_looped), (_, ratio) = _paired([batched, looped], repeats, 0.0)
    section = "attacks"
    rows.append(BenchRow(section, f"{seeds} phi/psi attacks x {steps} steps, batched", t_batched, "s"))
    rows.append(BenchRow(section, f"{seeds} phi/psi attacks x {steps} steps, looped", t_looped, "s"))
    rows.append(BenchRow(section, "ratio looped / batched", ratio, "x", ">= 10"))


def _peak_rss_mb() -> float:
    """This process's peak resident set size (``VmHWM``; unlike ``ru_maxrss`` it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _probe(configuration: str, n_atoms: int) -> Dict[str, float]:
    """Run one configuration once in this (fresh) process; peak RSS before and after, in MB."""
    from advmd.openmm import use_simple_executor
    from advmd.performance import tune_allocator

    tune_allocator()
    use_simple_executor(True)
    _, _, _, xyz, numbers, cell = system(n_atoms)
    committee, member = models()
    if configuration == "member":
        module = torch.jit.script(member)
        run = lambda: member_energy_forces(module, xyz, numbers, cell)  # noqa: E731
    else:
        strength = torch.tensor(HAL_STRENGTH_ANGSTROM if configuration == "hal" else 0.0)
        module = torch.jit.script(potential(committee))
        run = lambda: module(xyz, numbers, cell, strength)  # noqa: E731
    baseline = _peak_rss_mb()
    for _ in range(3):
        run()
    peak = _peak_rss_mb()
    return {"baseline_mb": baseline, "peak_mb": peak}


def measure_memory(sizes: Sequence[int], rows: List[BenchRow]) -> None:
    """Item 8: each configuration in a fresh process (peak RSS is a high-water mark)."""
    names = {"member": "one member", "committee": "committee M=5, mean only", "hal": "committee M=5, sigma_F bias"}
    for n_atoms in sizes:
        for configuration, label in names.items():
            command = [sys.executable, "-m", "advmd.bench", "--probe", configuration, str(n_atoms)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            target = "<= 1500" if (configuration == "hal" and 600 <= n_atoms <= 700) else ""
            section = f"memory, {n_atoms} atoms"
            rows.append(BenchRow(section, f"{label}: peak RSS", figures["peak_mb"], "MB", target))
            rows.append(
                BenchRow(section, f"{label}: above the process baseline", figures["peak_mb"] - figures["baseline_mb"], "MB")
            )


def run_benchmarks(
    sizes: Sequence[int] = SIZES,
    repeats: int = 25,
    platform: str = "auto",
    attack_seeds: int = 20,
    attack_steps: int = 5,
    memory: bool = True,
    progress: Optional[TextIO] = None,
) -> List[BenchRow]:
    """Measure everything; returns the rows (see the module doc for the list).

    Runs TorchScript's simple executor, as ``advmd md`` does (the profiling executor
    re-optimises during the first calls, which would land in the timings).
    """
    from advmd.openmm import use_simple_executor
    from advmd.performance import tune_allocator

    tune_allocator()
    use_simple_executor(True)
    torch.manual_seed(0)
    rows: List[BenchRow] = []

    def say(message: str) -> None:
        if progress is not None:
            progress.write(f"[bench] {message}\n")
            progress.flush()

    for n_atoms in sizes:
        say(f"{n_atoms} atoms: member, committee, OpenMM steps")
        measure_size(n_atoms, repeats if n_atoms <= 100 else max(2, repeats // 6), platform, rows)
    large = [n for n in sizes if n >= 1000]
    medium = [n for n in sizes if 100 < n < 1000]
    if large and medium:
        say("scaling of one member")
        measure_scaling(medium[0], large[-1], max(2, repeats // 6), rows)
    if 22 in sizes:
        say("sigma logging")
        measure_logging(repeats, platform, rows)
        say("ASE Python-loop MD")
        measure_ase(repeats, platform, rows)
        say("attacks")
        measure_attacks(attack_seeds, attack_steps, max(1, repeats // 6), rows)
    if memory:
        say("peak memory (one fresh process per configuration)")
        measure_memory(sizes, rows)
    return rows


def format_rows(rows: Sequence[BenchRow], platform: str = "auto") -> str:
    """The printed table: header with versions and threads, then one line per row."""
    import openmm

    lines = [
        f"advmd bench  {time.strftime('%Y-%m-%d')}  torch {torch.__version__}  openmm {openmm.__version__}  "
        f"threads {torch.get_num_threads()}  platform {platform}  SchNet M={N_MEMBERS} "
        f"(64 features, 3 interactions, cutoff 5 A, float32)"
    ]
    width = max(len(r.name) for r in rows)
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(f"  {section}")
        target = f"target {row.target:<8} {row.verdict()}" if row.target else ""
        lines.append(f"    {row.name:<{width}}  {row.value:10.3f} {row.unit:<3}  {target}".rstrip())
    return "\n".join(lines)


def rows_to_json(rows: Sequence[BenchRow]) -> str:
    return json.dumps([dict(asdict(r), verdict=r.verdict()) for r in rows], indent=1)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--probe":
    print(json.dumps(_probe(sys.argv[2], int(sys.argv[3]))))
