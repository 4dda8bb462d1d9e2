"""Shared helpers for the course notebooks and the training script."""

from .data import (
    BUTTERFLIES,
    MNIST,
    DataError,
    find_images,
    images_to_tensor,
    is_fallback,
    load_image_dataset,
    load_image_folder,
    make_dataloader,
    preprocess_image,
    random_flip,
    real_mnist_digits,
    synthetic_butterflies,
    tensor_to_pil,
)
from .environment import (
    detect_platform,
    environment_summary,
    get_device,
    is_online,
    is_quick_mode,
    repo_root,
    seed_everything,
    setup_course,
)
from .hub import full_repo_name, is_logged_in, push_folder, save_pipeline, write_model_card
from .viz import (
    image_strip,
    make_grid,
    noise_slider,
    plot_losses,
    plot_schedules,
    save_gif,
    show_gif,
    upscale,
    use_japanese_font,
)

__all__ = [
    "BUTTERFLIES", "MNIST", "DataError", "detect_platform", "environment_summary", "find_images",
    "full_repo_name", "get_device", "image_strip", "images_to_tensor", "is_fallback", "is_logged_in",
    "is_online", "is_quick_mode", "load_image_dataset", "load_image_folder", "make_dataloader", "make_grid",
    "noise_slider", "plot_losses", "plot_schedules", "preprocess_image", "push_folder", "random_flip",
    "real_mnist_digits", "repo_root", "save_gif", "save_pipeline", "seed_everything", "setup_course",
    "show_gif", "synthetic_butterflies", "tensor_to_pil", "upscale", "use_japanese_font", "write_model_card",
]
