"""The training script as a module for the tests (utils.course.load_training_script, shared with the benchmarks)."""

from utils.course import load_training_script as load_script

__all__ = ["load_script"]
