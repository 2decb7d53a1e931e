"""The active-learning loop: train, explore (MD, biased MD, attacks, random), select, label, repeat."""

from advmd.loop.config import load_loop_config, validate_loop_config
from advmd.loop.executor import DaskExecutor, Executor, ProcessExecutor, SerialExecutor, make_executor
from advmd.loop.runner import LoopRunner, run_loop

__all__ = [
    "DaskExecutor",
    "Executor",
    "LoopRunner",
    "ProcessExecutor",
    "SerialExecutor",
    "load_loop_config",
    "make_executor",
    "run_loop",
    "validate_loop_config",
]
