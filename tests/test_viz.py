from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from utils import viz

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("batch, channels, nrow, size", [
    (1, 1, None, (8 + 4, 8 + 4)),
    (5, 3, None, (3 * 8 + 8, 2 * 8 + 6)),
    (6, 1, 6, (6 * 8 + 14, 8 + 4)),
])
def test_make_grid_layout(batch, channels, nrow, size):
    grid = viz.make_grid(torch.zeros(batch, channels, 8, 8), nrow=nrow)
    assert grid.size == size
    assert grid.mode == ("L" if channels == 1 else "RGB")


def test_make_grid_pixel_values():
    x = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])
    grid = np.asarray(viz.make_grid(x, nrow=2, padding=1))
    assert (grid[1:3, 1:3] == 0).all() and (grid[1:3, 4:6] == 255).all()
    assert (grid[0] == 255).all()  # padding is white


def test_make_grid_bad_shape():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        viz.make_grid(torch.zeros(2, 2, 4, 4))


def test_image_strip_mixed_sizes_and_modes():
    strip = viz.image_strip([Image.new("L", (4, 6)), Image.new("RGB", (5, 3))], padding=1)
    assert strip.size == (4 + 5 + 3, 6 + 2) and strip.mode == "RGB"
    with pytest.raises(ValueError):
        viz.image_strip([])


def test_upscale_keeps_pixels_crisp():
    image = Image.fromarray(np.array([[0, 255]], dtype=np.uint8), "L")
    assert np.asarray(viz.upscale(image, 3)).tolist() == [[0] * 3 + [255] * 3] * 3


def test_plot_losses_linear_and_log():
    fig = viz.plot_losses([1.0, 0.5, 0.25, 0.2, 0.1], smooth=2)
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log"]
    assert len(fig.axes[0].lines) == 2


def test_plot_schedules_curves():
    abar = torch.linspace(0.99, 0.01, 10)
    fig = viz.plot_schedules({"a": abar, "b": abar ** 2})
    first = fig.axes[0].lines[0].get_ydata()
    assert np.allclose(first, abar.sqrt().numpy(), atol=1e-6)
    assert np.allclose(fig.axes[1].lines[0].get_ydata(), (1 - abar).sqrt().numpy(), atol=1e-6)


def test_save_gif_round_trip(tmp_path):
    frames = [Image.new("L", (4, 4), v) for v in (0, 128, 255)]
    path = viz.save_gif(frames, tmp_path / "a" / "x.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 3
    with pytest.raises(ValueError):
        viz.save_gif([], tmp_path / "y.gif")


def test_noise_slider_shows_the_batch_noised_to_the_slider_step(monkeypatch):
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=10)
    x0, noise = torch.zeros(2, 1, 4, 4), torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    shown, make_grid = [], viz.make_grid
    monkeypatch.setattr(viz, "make_grid", lambda images, **kw: shown.append(images.clone()) or make_grid(images, **kw))
    slider = viz.noise_slider(x0, scheduler, noise=noise).children[0]
    assert slider.max == 9 and len(shown) == 1
    assert torch.allclose(shown[0], scheduler.add_noise(x0, noise, torch.tensor([0, 0])))
    slider.value = 9
    assert len(shown) == 2 and torch.allclose(shown[1], scheduler.add_noise(x0, noise, torch.tensor([9, 9])))
    assert not torch.allclose(shown[0], shown[1])


def test_log_axes_label_ticks_with_plain_numbers():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0.2, 20_000], [1, 500])
    viz.log_axes(ax)
    assert ax.get_xscale() == ax.get_yscale() == "log"
    major, minor = ax.xaxis.get_major_formatter(), ax.xaxis.get_minor_formatter()
    assert [major(v, 0) for v in (0.1, 10, 10_000)] == ["0.1", "10", "10000"]
    assert [minor(v, 0) for v in (0.2, 0.3, 5, 20_000)] == ["0.2", "", "5", "20000"]  # 1, 2 and 5 of a decade
    ax.set_xlim(2, 9)  # less than a decade: more of the ticks get a label
    assert [minor(v, 0) for v in (3, 4, 6, 7)] == ["3", "4", "", "7"]
    plt.close(fig)


def test_plots_use_a_japanese_font():
    import matplotlib

    assert viz.use_japanese_font()
    viz.plot_losses([1.0, 0.5])
    assert "IPAexGothic" in matplotlib.rcParams["font.family"]


def test_draw_basic_unet_labels_each_layer_with_its_measured_output():
    import importlib.util

    spec = importlib.util.spec_from_file_location("naive_baseline", ROOT / "benchmarks" / "naive_baseline.py")
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    net = baseline.notebook_definitions(["BasicUNet"])["BasicUNet"](channels=(4, 8, 8))  # notebook 02's model
    fig = viz.draw_basic_unet(net)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "Conv 5×5\n1→4 ch\n28×28" in texts and "Conv 5×5\n4→8 ch\n14×14" in texts
    assert "Conv 5×5\n8→8 ch\n7×7" in texts and "Conv 5×5\n4→1 ch\n28×28" in texts
    assert texts.count("スキップ接続（足し算）") == 2 and texts.count("MaxPool ↓") == 2
    plt.close(fig)
