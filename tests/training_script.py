"""unit1/train_unconditional.py imported as a module (it is a script, not part of a package), for the tests."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "unit1" / "train_unconditional.py"


def load_script():
    """The training script as the module ``train_unconditional`` (imported once per test process)."""
    if "train_unconditional" in sys.modules:
        return sys.modules["train_unconditional"]
    spec = importlib.util.spec_from_file_location("train_unconditional", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
