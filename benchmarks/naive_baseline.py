"""The leaderboard's baseline: the seed course's naive from-scratch recipe, trained and scored like a recipe.

    python benchmarks/naive_baseline.py --output_dir outputs/naive-baseline

The recipe that notebook 02 (sections 2-5) teaches first, with the notebook's own code: ``BasicUNet``,
``corrupt`` and ``sample_naive`` are taken from the notebook's cells (not retyped here). MNIST digits in
[0, 1] are mixed with uniform noise by a random ``amount``, the ~300 k-parameter plain-convolution UNet,
which does not know the amount, predicts the clean digit (MSE, Adam at 1e-3, batch 128, as many steps as
three epochs of the 60 000 MNIST digits), and sampling moves from uniform noise towards the prediction in
40 steps. The 1 000 samples are scored with utils.metrics.digit_metrics, and the run is written as a
``recipe.json`` (utils/recipe.py) that the leaderboard reads beside the training script's recipes.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from utils import images_to_tensor, is_fallback, load_image_dataset, make_grid, upscale
from utils.environment import describe_device, library_versions
from utils.metrics import digit_metrics
from utils.recipe import command_line, write_recipe

ROOT = Path(__file__).resolve().parent.parent

NOTEBOOK = ROOT / "unit1" / "02_diffusion_models_from_scratch.ipynb"
FROM_NOTEBOOK = ("BasicUNet", "corrupt", "sample_naive")


def notebook_definitions(names=FROM_NOTEBOOK, notebook: Path = NOTEBOOK, device: str = "cpu") -> dict:
    """The functions and classes called ``names`` as notebook 02 defines them, compiled from its code cells.

    Only the definitions themselves run (not the rest of their cells); the notebook's global ``device`` is
    ``device``. A missing name is an error: the baseline must not drift away from the lesson.
    """
    from torch import nn

    namespace = {"torch": torch, "nn": nn, "F": F, "device": torch.device(device)}
    found = set()
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
                exec(compile(ast.Module([node], []), f"{notebook.name}:{node.name}", "exec"), namespace)
                found.add(node.name)
    missing = set(names) - found
    if missing:
        raise RuntimeError(f"{notebook.name} no longer defines {', '.join(sorted(missing))}: update "
                           "benchmarks/naive_baseline.py together with the notebook.")
    return {name: namespace[name] for name in names}


def sample(sample_naive, net, num_images: int, num_steps: int, generator: torch.Generator,
           batch_size: int = 250) -> torch.Tensor:
    """The notebook's ``sample_naive`` in batches (it also keeps every step, which 1 000 images at once need not)."""
    return torch.cat([sample_naive(net, min(batch_size, num_images - start), num_steps, generator)[0]
                      for start in range(0, num_images, batch_size)])


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
    command = command_line("benchmarks/naive_baseline.py", argv=argv)
    lesson = notebook_definitions()
    torch.manual_seed(args.seed)  # the notebook's corrupt draws its noise from torch's global generator
    generator = torch.Generator().manual_seed(args.seed)

    dataset = load_image_dataset("mnist", split="train")
    x01 = (images_to_tensor(dataset["image"], size=28, channels=1) + 1) / 2
    net = lesson["BasicUNet"]()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    start = time.perf_counter()
    for step in range(args.train_steps):
        batch = x01[torch.randint(len(x01), (args.batch_size,), generator=generator)]
        amount = torch.rand(args.batch_size, generator=generator)
        loss = F.mse_loss(net(lesson["corrupt"](batch, amount)), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.train_steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}", flush=True)
    train_seconds = time.perf_counter() - start

    net.eval()
    samples = sample(lesson["sample_naive"], net, args.eval_num_samples, args.sampling_steps, generator).clamp(0, 1)
    metrics = digit_metrics(samples, value_range=(0.0, 1.0))
    (args.output_dir / "samples").mkdir(parents=True, exist_ok=True)
    upscale(make_grid(samples[:64] * 2 - 1, nrow=8), 2).save(args.output_dir / "samples" / "final.png")
    recipe = {
        "command": command, "dataset": "mnist",
        "dataset_fallback": dataset.info.description if is_fallback(dataset) else None,
        "num_train_images": len(x01), "resolution": 28, "model_size": "BasicUNet",
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "prediction_type": "sample (naive: uniform noise, no timestep)", "sampler": "naive",
        "num_inference_steps": args.sampling_steps, "guide_step": None, "guidance_scale": 1.0,
        "network_evaluations": args.sampling_steps,
        "learning_rate": args.learning_rate, "train_batch_size": args.batch_size,
        "effective_batch_size": args.batch_size, "device": describe_device("cpu"), "num_processes": 1,
        "mixed_precision": "no", "train_minutes": round(train_seconds / 60, 3),
        "images_seen": args.train_steps * args.batch_size, "optimizer_steps": args.train_steps,
        "final_loss": loss.item(), "seed": args.seed, "versions": library_versions(), "metrics": metrics,
    }
    write_recipe(args.output_dir, recipe)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {args.output_dir / 'recipe.json'} ({train_seconds / 60:.1f} min of training)")
    return recipe


if __name__ == "__main__":
    main()
