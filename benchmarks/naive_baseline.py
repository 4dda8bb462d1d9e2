"""The leaderboard's baseline: the seed course's naive from-scratch recipe, trained and scored like a recipe.

    python benchmarks/naive_baseline.py --output_dir outputs/naive-baseline

A direct reimplementation of the recipe that notebook 02 (sections 2-5) teaches first: MNIST digits in
[0, 1] are mixed with uniform noise by a random ``amount``, a ~300 k-parameter plain-convolution UNet that
does not know the amount predicts the clean digit (MSE, Adam at 1e-3, batch 128, as many steps as three
epochs of the 60 000 MNIST digits), and sampling moves from uniform noise towards the prediction in 40
steps. The 1 000 samples are scored with utils.metrics.digit_metrics, and the run is written as a
``recipe.json`` that ``python -m utils.leaderboard`` reads beside the training script's recipes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the course's utils importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from utils import images_to_tensor, is_fallback, load_image_dataset, make_grid, upscale  # noqa: E402
from utils.environment import describe_device, library_versions  # noqa: E402
from utils.metrics import digit_metrics  # noqa: E402


class BasicUNet(nn.Module):
    """Three 5x5 convolutions down (max-pooling), three up (upsampling), additive skips, SiLU; no timestep."""

    def __init__(self, channels=(32, 64, 64)):
        super().__init__()
        c1, c2, c3 = channels
        self.down_layers = nn.ModuleList([nn.Conv2d(1, c1, 5, padding=2), nn.Conv2d(c1, c2, 5, padding=2),
                                          nn.Conv2d(c2, c3, 5, padding=2)])
        self.up_layers = nn.ModuleList([nn.Conv2d(c3, c2, 5, padding=2), nn.Conv2d(c2, c1, 5, padding=2),
                                        nn.Conv2d(c1, 1, 5, padding=2)])

    def forward(self, x):
        skips = []
        for i, layer in enumerate(self.down_layers):
            x = F.silu(layer(x))
            if i < len(self.down_layers) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for i, layer in enumerate(self.up_layers):
            if i > 0:
                x = F.interpolate(x, scale_factor=2) + skips.pop()
            x = layer(x)
            if i < len(self.up_layers) - 1:
                x = F.silu(x)
        return x


def corrupt(x: torch.Tensor, amount: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mix each image with uniform noise by its own ``amount`` in [0, 1]."""
    noise = torch.rand(x.shape, generator=generator)
    amount = amount.view(-1, 1, 1, 1)
    return x * (1 - amount) + noise * amount


@torch.no_grad()
def sample(net: nn.Module, num_images: int, num_steps: int, generator: torch.Generator,
           batch_size: int = 250) -> torch.Tensor:
    """From uniform noise, step i of n moves the images 1/(n - i) of the way to the model's prediction."""
    results = []
    for start in range(0, num_images, batch_size):
        x = torch.rand(min(batch_size, num_images - start), 1, 28, 28, generator=generator)
        for i in range(num_steps):
            mix = 1 / (num_steps - i)
            x = x * (1 - mix) + net(x) * mix
        results.append(x)
    return torch.cat(results)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/naive-baseline"),
                        help="where recipe.json and samples/final.png go")
    parser.add_argument("--train_steps", type=int, default=1407,
                        help="optimizer steps (default: three epochs of 60 000 digits at batch 128)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--sampling_steps", type=int, default=40)
    parser.add_argument("--eval_num_samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/naive_baseline.py", *(sys.argv[1:] if argv is None else argv)])
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    dataset = load_image_dataset("mnist", split="train")
    x01 = (images_to_tensor(dataset["image"], size=28, channels=1) + 1) / 2
    net = BasicUNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    start = time.perf_counter()
    for step in range(args.train_steps):
        batch = x01[torch.randint(len(x01), (args.batch_size,), generator=generator)]
        amount = torch.rand(args.batch_size, generator=generator)
        loss = F.mse_loss(net(corrupt(batch, amount, generator)), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.train_steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    train_seconds = time.perf_counter() - start

    net.eval()
    samples = sample(net, args.eval_num_samples, args.sampling_steps, generator).clamp(0, 1)
    metrics = digit_metrics(samples, value_range=(0.0, 1.0))
    (args.output_dir / "samples").mkdir(parents=True, exist_ok=True)
    upscale(make_grid(samples[:64] * 2 - 1, nrow=8), 2).save(args.output_dir / "samples" / "final.png")
    recipe = {
        "command": command, "dataset": "mnist", "dataset_fallback": is_fallback(dataset),
        "num_train_images": len(x01), "model_size": "BasicUNet", "num_parameters": sum(p.numel() for p in net.parameters()),
        "prediction_type": "sample (naive: uniform noise, no timestep)", "sampler": "naive",
        "num_inference_steps": args.sampling_steps, "learning_rate": args.learning_rate,
        "train_batch_size": args.batch_size, "effective_batch_size": args.batch_size, "device": describe_device("cpu"),
        "num_processes": 1, "train_minutes": round(train_seconds / 60, 3),
        "images_seen": args.train_steps * args.batch_size, "optimizer_steps": args.train_steps,
        "final_loss": loss.item(), "seed": args.seed, "versions": library_versions(), "metrics": metrics,
    }
    (args.output_dir / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False))
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.output_dir / 'recipe.json'} ({train_seconds / 60:.1f} min of training)")
    return recipe


if __name__ == "__main__":
    main()
