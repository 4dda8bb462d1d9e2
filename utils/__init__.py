"""Shared helpers for the course notebooks: ``from utils import make_grid, setup_course, ...``.

The package exports exactly the names the notebooks import (tests/test_utils_package.py keeps it so). Each name is
loaded from its module on first use (PEP 562), so ``import utils.recipe`` or ``import utils.course`` does not load
torch. The modules form layers, each importing only those before it:
setup, recipe, environment <- data <- sampling <- training <- checkpoints <- metrics <- hub <- viz <- course.
setup (the setup cell's ``ensure_packages``) runs before the course's packages are installed: it imports only the
standard library and packaging, and this file imports nothing else either.
The training script, the benchmarks and the maintainer tools (tools/) import from the modules themselves.
"""

from importlib import import_module

_EXPORTS = {
    "course": ["setup_course"],
    "data": ["BUTTERFLIES", "DataError", "images_to_tensor", "is_fallback", "load_image_dataset",
             "load_image_folder", "make_dataloader", "tensor_to_pil"],
    "environment": ["library_versions", "repo_root", "seed_everything"],
    "hub": ["is_logged_in", "write_model_card"],
    "recipe": ["write_recipe"],
    "sampling": ["generate"],
    "setup": ["ensure_packages"],
    "viz": ["draw_basic_unet", "image_strip", "make_grid", "noise_slider", "plot_losses", "plot_schedules",
            "save_gif", "show_gif", "upscale"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'utils' has no attribute {name!r}")
    value = getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
