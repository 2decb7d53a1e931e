"""The allocator setting is applied once, and honours the opt-out."""

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, platform
from advmd.performance import tune_allocator
print(tune_allocator(), tune_allocator())
"""


@pytest.mark.parametrize("value,expected", [("1", "True True"), ("0", "False False")])
def test_tune_allocator_and_opt_out(value, expected):
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        expected = "False False"
    env = {"ADVMD_TUNE_ALLOCATOR": value, "PATH": ""}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected
