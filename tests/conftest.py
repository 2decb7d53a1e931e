"""Shared fixtures: alanine dipeptide from the package data and small float64 committees."""

import importlib.resources

import numpy as np
import pytest
import torch

import advmd  # noqa: F401  (imports torch before openmmtorch)
from advmd.committee import CommitteePotential, SchNetCommittee, make_bias

SPECIES = [1, 6, 7, 8]


@pytest.fixture(scope="session")
def alanine_pdb():
    from openmm import app

    path = importlib.resources.files("advmd") / "resources" / "alanine-dipeptide.pdb"
    return app.PDBFile(str(path))


@pytest.fixture(scope="session")
def alanine(alanine_pdb):
    """(positions in Angstrom float64 tensor, atomic numbers int64 tensor)."""
    positions = torch.tensor(alanine_pdb.getPositions(asNumpy=True)._value * 10.0, dtype=torch.float64)
    numbers = torch.tensor([a.element.atomic_number for a in alanine_pdb.topology.atoms()], dtype=torch.long)
    return positions, numbers


def small_committee(n_members=4, seed=0, cutoff=4.0):
    """A small float64 SchNet committee (fast, tight tolerances)."""
    committee = SchNetCommittee(SPECIES, n_members=n_members, n_features=16, n_rbf=10, n_interactions=2, cutoff=cutoff, seed=seed)
    return committee.double()


def small_potential(form="none", n_members=4, seed=0, cutoff=4.0, **bias_parameters):
    committee = small_committee(n_members=n_members, seed=seed, cutoff=cutoff)
    return CommitteePotential(committee, make_bias(form, n_members, **bias_parameters)).double()


def available_platforms():
    """OpenMM platforms that can run a context here: Reference and CPU always, CUDA/OpenCL where present."""
    import openmm

    names = []
    for name in ("Reference", "CPU", "CUDA", "OpenCL"):
        try:
            platform = openmm.Platform.getPlatformByName(name)
            system = openmm.System()
            system.addParticle(1.0)
            openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        except Exception:
            continue
        names.append(name)
    return names


BIAS_CASES = [("none", {}, 0.0), ("udd", {"width": 1.0}, 0.3), ("hal", {}, 0.2)]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def run_cli(*argv):
    """Run ``advmd`` in-process; returns what it printed (asserts exit status 0)."""
    import io

    from advmd.cli import main

    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


def labelled_alanine_db(path, n_frames, seed):
    """A dataset of alanine dipeptide MD frames labelled by amber14 (a few seconds)."""
    from advmd.data import Dataset, Provenance
    from advmd.data.initial import alanine_md_structures
    from advmd.labelers import make_labeler

    dataset = Dataset(path)
    dataset.add(alanine_md_structures(n_frames=n_frames, interval_ps=0.2, seed=seed), Provenance(source="initial"))
    dataset.label_pending(make_labeler("amber14"), progress=False)
    return path
