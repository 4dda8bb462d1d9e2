"""Image grids, strips, loss and schedule plots, animations and widgets.

torch, matplotlib and the data helpers are imported inside the functions that use them, so the plotting helpers
(``use_japanese_font``, ``log_axes``) serve the maintainer tools (tools/leaderboard.py) without loading torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch


def use_japanese_font() -> bool:
    """Let matplotlib draw Japanese text (IPAex Gothic from matplotlib-fontja); False if it is missing."""
    try:
        import matplotlib_fontja  # noqa: F401 - importing it registers the font
    except ImportError:
        return False
    return True


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
              background: int = 255) -> Image.Image:
    """A batch (B, C, H, W) in [-1, 1] with C in {1, 3} -> one PIL image laid out in rows of ``nrow``."""
    import torch

    from .data import tensor_to_pil

    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty (B, C, H, W) batch with 1 or 3 channels, got {tuple(images.shape)}.")
    tiles = tensor_to_pil(images)
    b, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(b))
    ncol = math.ceil(b / nrow)
    mode = tiles[0].mode
    fill = background if mode == "L" else (background,) * 3
    grid = Image.new(mode, (nrow * w + (nrow + 1) * padding, ncol * h + (ncol + 1) * padding), fill)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, nrow)
        grid.paste(tile, (padding + col * (w + padding), padding + row * (h + padding)))
    return grid


def image_strip(images: list[Image.Image], padding: int = 2, background: int = 255) -> Image.Image:
    """PIL images side by side in one row (mixed sizes are top-aligned, mixed modes converted to RGB)."""
    if not images:
        raise ValueError("image_strip needs at least one image.")
    mode = images[0].mode if all(im.mode == images[0].mode for im in images) else "RGB"
    mode = mode if mode in ("L", "RGB") else "RGB"
    width = sum(im.width for im in images) + padding * (len(images) + 1)
    height = max(im.height for im in images) + 2 * padding
    strip = Image.new(mode, (width, height), background if mode == "L" else (background,) * 3)
    x = padding
    for im in images:
        strip.paste(im.convert(mode), (x, padding))
        x += im.width + padding
    return strip


def upscale(image: Image.Image, factor: int = 4) -> Image.Image:
    """Enlarge a small image with nearest-neighbour sampling so pixels stay crisp."""
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def plot_losses(losses, title: str = "学習の損失", smooth: int | None = None):
    """Loss curve on a linear and a log scale side by side; returns the matplotlib figure."""
    import matplotlib.pyplot as plt
    import torch

    use_japanese_font()
    losses = torch.as_tensor(list(losses), dtype=torch.float32)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, scale in zip(axes, ("linear", "log")):
        ax.plot(losses.numpy(), alpha=0.35 if smooth else 1.0, label="各ステップ")
        if smooth and len(losses) >= smooth:
            kernel = torch.ones(1, 1, smooth) / smooth
            averaged = torch.nn.functional.conv1d(losses.view(1, 1, -1), kernel).view(-1)
            ax.plot(range(smooth - 1, len(losses)), averaged.numpy(), label=f"{smooth} ステップ移動平均")
            ax.legend()
        ax.set_yscale(scale)
        ax.set_xlabel("ステップ")
        ax.set_ylabel("損失")
        ax.set_title(f"{title}（{'線形' if scale == 'linear' else '対数'}スケール）")
    fig.tight_layout()
    return fig


def plot_schedules(alphas_cumprod: dict[str, torch.Tensor]):
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) against t for each named schedule; returns the figure."""
    import matplotlib.pyplot as plt
    import torch

    use_japanese_font()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for name, abar in alphas_cumprod.items():
        abar = torch.as_tensor(abar, dtype=torch.float64)
        axes[0].plot(abar.sqrt().numpy(), label=name)
        axes[1].plot((1 - abar).sqrt().numpy(), label=name)
    axes[0].set_title(r"$\sqrt{\bar\alpha_t}$（元画像の係数）")
    axes[1].set_title(r"$\sqrt{1-\bar\alpha_t}$（ノイズの係数）")
    for ax in axes:
        ax.set_xlabel("タイムステップ $t$")
        ax.legend()
    fig.tight_layout()
    return fig


def draw_basic_unet(net, input_shape: tuple[int, ...] = (1, 1, 28, 28)):
    """Diagram of a BasicUNet (notebook 02): each layer's output channels and resolution, the down and up paths
    and the skip connections, measured with forward hooks on one input of ``input_shape``; returns the figure."""
    import matplotlib.pyplot as plt
    import torch

    use_japanese_font()
    shapes = {}
    layers = [*net.down_layers, *net.up_layers]
    hooks = [layer.register_forward_hook(lambda m, i, out: shapes.__setitem__(m, tuple(out.shape[1:])))
             for layer in layers]
    with torch.no_grad():
        net(torch.zeros(input_shape, device=next(net.parameters()).device))
    for hook in hooks:
        hook.remove()
    n = len(net.down_layers)
    positions = [(i, -i) for i in range(n)] + [(n + i, -(n - 1 - i)) for i in range(n)]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for (px, py), layer in zip(positions, layers):
        c, h, w = shapes[layer]
        ax.add_patch(plt.Rectangle((px - 0.42, py - 0.3), 0.84, 0.6, fc="#dbe9f6", ec="#34699a"))
        ax.text(px, py, f"Conv {layer.kernel_size[0]}×{layer.kernel_size[1]}\n{layer.in_channels}→{c} ch\n{h}×{w}",
                ha="center", va="center", fontsize=9)
    for k in range(len(positions) - 1):
        (x0, y0), (x1, y1) = positions[k], positions[k + 1]
        label = "MaxPool ↓" if y1 < y0 else ("Upsample ↑" if y1 > y0 else "")
        start = (x0, y0 - 0.3 if y1 < y0 else y0 + 0.3 * (y1 > y0))
        end = (x1 - 0.42 * (x1 != x0), y1 + 0.3 * (y1 < y0) - 0.3 * (y1 > y0))
        ax.annotate("", end, start, arrowprops=dict(arrowstyle="->", color="gray"))
        ax.text((x0 + x1) / 2 + 0.08, (y0 + y1) / 2, label, fontsize=8, color="gray")
    for i in range(n - 1):  # skip connections: down-path layer i -> the up-path layer at the same height
        (x0, y0), (x1, _) = positions[i], positions[2 * n - 1 - i]
        ax.annotate("", (x1 - 0.42, y0), (x0 + 0.42, y0), arrowprops=dict(arrowstyle="->", ls="--", color="#c0504d"))
        ax.text((x0 + x1) / 2, y0 + 0.08, "スキップ接続（足し算）", ha="center", fontsize=8, color="#c0504d")
    ax.set_xlim(-0.7, 2 * n - 0.3)
    ax.set_ylim(-n + 0.4, 0.6)
    ax.axis("off")
    ax.set_title("BasicUNet の構造（各層の出力のチャンネル数と解像度）")
    return fig


def log_axes(ax) -> None:
    """Logarithmic x and y axes labelled with plain numbers (0.2, 10, 20000) at 1, 2 and 5 of each decade,
    or at every tick where an axis spans less than a decade."""
    from matplotlib import ticker

    def minor_formatter(axis):
        def minor(value, _):
            low, high = sorted(axis.get_view_interval())
            mantissa = round(value / 10 ** math.floor(math.log10(value)))
            return f"{value:g}" if mantissa in (2, 5) or (high < 10 * low and mantissa in (2, 3, 4, 5, 7)) else ""
        return ticker.FuncFormatter(minor)

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(minor_formatter(axis))


def save_gif(frames: list[Image.Image], path: str | Path, duration_ms: int = 80, final_pause_ms: int = 1000) -> Path:
    """Write frames as a looping GIF (the last frame is held longer); returns the path."""
    if not frames:
        raise ValueError("save_gif needs at least one frame.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [duration_ms] * (len(frames) - 1) + [final_pause_ms]
    frames = [f.convert("RGB") for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def show_gif(path: str | Path):
    """Display a GIF inline in Jupyter."""
    from IPython.display import Image as IPyImage
    from IPython.display import display

    display(IPyImage(data=Path(path).read_bytes(), format="gif"))


def noise_slider(x0: torch.Tensor, scheduler, noise: torch.Tensor | None = None, scale: int = 3):
    """An ipywidgets slider over t that shows ``scheduler.add_noise(x0, noise, t)`` as a grid."""
    import ipywidgets as widgets
    import torch
    from IPython.display import display

    noise = torch.randn_like(x0) if noise is None else noise
    last = len(scheduler.alphas_cumprod) - 1
    slider = widgets.IntSlider(value=0, min=0, max=last, step=1, description="t",
                               continuous_update=False, layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def render(change=None):
        t = torch.full((x0.shape[0],), slider.value, dtype=torch.long)
        xt = scheduler.add_noise(x0, noise, t)
        abar = float(scheduler.alphas_cumprod[slider.value])
        with out:
            out.clear_output(wait=True)
            print(f"t = {slider.value}:  √ᾱ_t = {abar ** 0.5:.3f},  √(1-ᾱ_t) = {(1 - abar) ** 0.5:.3f}")
            display(upscale(make_grid(xt, nrow=x0.shape[0]), scale))

    slider.observe(render, names="value")
    render()
    box = widgets.VBox([slider, out])
    display(box)
    return box
