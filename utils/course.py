"""Course-wide constants (the single place that names the GitHub repository) and the notebooks' start-up.

The notebooks' setup cell clones https://github.com/GITHUB_REPO (branch BRANCH) when it is opened alone; the
environment variable COURSE_REPO_URL replaces that URL (any URL or path git can clone: tests use a local copy).

This module sits at the top of the utils layers (environment <- data <- viz <- course) and imports the helpers
of ``setup_course`` only when it runs, so reading the constants (tools/sync_course.py) does not load torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

    import torch

GITHUB_REPO = "diffusion-course-ja/diffusion-course"
BRANCH = "main"
NOTEBOOKS = {
    "unit1/01_introduction_to_diffusers.ipynb": "Diffusers 入門 (Introduction to Diffusers)",
    "unit1/02_diffusion_models_from_scratch.ipynb": "ゼロから作る拡散モデル (Diffusion Models from Scratch)",
}


def setup_course(seed: int = 0) -> tuple[torch.device, bool, bool]:
    """Notebook start-up: seed, pick the device and mode, print the summary; returns (device, quick, online)."""
    from .environment import environment_summary, get_device, is_online, is_quick_mode, seed_everything
    from .viz import use_japanese_font

    seed_everything(seed)
    use_japanese_font()
    device, quick, online = get_device(), is_quick_mode(), is_online()
    if quick and os.environ.get("COURSE_QUICK") is None:
        print("使える GPU がないため、クイックモード（軽量設定）で実行します。"
              "フルモードで動かすには環境変数 COURSE_QUICK=0 を設定してください。")
    print(environment_summary(device, quick, online))
    return device, quick, online


def load_training_script() -> ModuleType:
    """unit1/train_unconditional.py (a script, not part of the package) as the module ``train_unconditional``,
    loaded once per process: the tests and the benchmarks call the script's own functions."""
    if "train_unconditional" in sys.modules:
        return sys.modules["train_unconditional"]
    path = Path(__file__).resolve().parent.parent / "unit1" / "train_unconditional.py"
    spec = importlib.util.spec_from_file_location("train_unconditional", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
