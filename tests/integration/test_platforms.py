"""Platform choice for committee Systems, and the PythonForce callback's readout."""

from typing import Optional, Tuple

import numpy as np
import openmm
import pytest
import torch
from openmm import app

from advmd import units
from advmd.openmm import create_system
from advmd.openmm.forces import STATISTICS, CommitteeComputation, _OpenMMBoundary
from advmd.openmm.platforms import choose_platform, is_committee_only, platform_names
from tests.conftest import small_potential

GPU = torch.cuda.is_available() and "CUDA" in platform_names()


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_auto_runs_committee_only_systems_on_reference_and_force_fields_on_cpu(alanine_pdb, backend):
    system = create_system(alanine_pdb.topology, small_potential("hal"), backend=backend)
    assert is_committee_only(system)  # the committee force and the CMMotionRemover create_system adds
    assert choose_platform(system).getName() == ("CUDA" if GPU else "Reference")
    system.addForce(openmm.HarmonicBondForce())
    assert not is_committee_only(system)
    assert choose_platform(system).getName() == ("CUDA" if GPU else "CPU")
    force_field = app.ForceField("amber14-all.xml").createSystem(alanine_pdb.topology)
    assert choose_platform(force_field).getName() == ("CUDA" if GPU else "CPU")
    assert choose_platform(system, "Reference").getName() == "Reference"  # a name is taken as given


def test_unknown_or_missing_platform_names_the_available_ones(alanine_pdb):
    system = create_system(alanine_pdb.topology, small_potential("none"))
    for name in ("Metal", "", None):
        with pytest.raises(ValueError, match=r"'Reference'.*'CPU'"):
            choose_platform(system, name)
    if "CUDA" not in platform_names():
        with pytest.raises(ValueError, match=r"platforms OpenMM has here \['Reference', 'CPU'\], got 'CUDA'"):
            choose_platform(system, "CUDA")


class _TupleModule(_OpenMMBoundary):
    """The PythonForce module as advmd saved it before 2026-12-02: (energy, forces, statistics)."""

    def forward(
        self, positions: torch.Tensor, box: Optional[torch.Tensor], strength: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.statistics(positions, box, strength)


def test_python_force_reads_modules_saved_in_the_older_tuple_form(alanine_pdb, alanine):
    potential = small_potential("udd", width=1.0)
    _, numbers = alanine
    module = torch.jit.script(_TupleModule(torch.jit.script(potential), numbers, None, 22, units.KJ_PER_MOL_TO_EV).eval())
    computation = CommitteeComputation(module, "advmd_bias_strength", False)
    assert computation.last is None
    reference = create_system(alanine_pdb.topology, potential, backend="python", bias_strength=0.5)
    system = openmm.System()
    for atom in alanine_pdb.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(openmm.PythonForce(computation, {"advmd_bias_strength": 0.5}))
    states = []
    for s in (system, reference):
        context = openmm.Context(s, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(alanine_pdb.positions)
        states.append(context.getState(getEnergy=True, getForces=True))
    assert states[0].getPotentialEnergy() == states[1].getPotentialEnergy()
    np.testing.assert_array_equal(states[0].getForces(asNumpy=True)._value, states[1].getForces(asNumpy=True)._value)
    assert sorted(computation.last) == sorted(STATISTICS) and computation.last["bias_energy"] != 0.0


def test_cli_refuses_an_unknown_platform_before_any_work(tmp_path):
    from advmd.cli import main

    for argv in (
        ["bench", "--platform", "Metal"],
        ["diagnose", "conservative", "--platform", "Metal", "--out", str(tmp_path)],
        ["demo", "--platform", "Metal", "--steps", "1"],
    ):
        with pytest.raises(SystemExit, match=r"--platform: .*'Metal'"):
            main(argv)
    assert not any(tmp_path.iterdir())  # the diagnosis wrote nothing
