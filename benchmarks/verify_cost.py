"""What verifying one leaderboard entry costs on this machine: load, generate and score, as ``--verify`` does.

    python benchmarks/verify_cost.py                      # the top recipe's model, three sampler settings
    python benchmarks/verify_cost.py --repeats 5 --settings dpm++sde:25:1.5

Each setting is SAMPLER:STEPS:GUIDANCE. A pipeline with the model configuration of the leaderboard's top recipe
(random weights: the cost does not depend on what the weights learned) and its autoguidance guide is saved to a
temporary folder and scored by tools.hub_entries' own scoring code with the recipe's sample count and batch size.
Prints the median of ``--repeats`` runs per setting and the cost per 1 000 network evaluations of one image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from tools import hub_entries
from utils.sampling import make_scheduler, network_evaluations

ROOT = Path(__file__).resolve().parent.parent
TOP = ROOT / "unit1" / "leaderboard" / "mnist-microconv-v-bs32-snr5-b99-ag-dpmsde25-15min" / "recipe.json"


def save_pipeline(folder: Path, recipe: dict) -> None:
    torch.manual_seed(0)
    config = {k: v for k, v in recipe["model_config"].items() if v is not None or k == "time_embedding_dim"}
    unet = UNet2DModel(**config)
    scheduler = DDPMScheduler(num_train_timesteps=recipe["ddpm_num_steps"], beta_schedule=recipe["ddpm_beta_schedule"],
                              prediction_type=recipe["prediction_type"])
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    unet.save_pretrained(folder / "guide_unet")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["dpm++sde:25:1.5", "ddpm:100:1"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num_samples", type=int, default=1000)
    args = parser.parse_args(argv)
    recipe = json.loads(TOP.read_text(encoding="utf-8"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model of {TOP.parent.name} "
          f"({recipe['num_parameters']:,} parameters), {args.num_samples} samples, batch {recipe['eval_batch_size']}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_pipeline(folder, recipe)
        for setting in args.settings:
            sampler, steps, scale = setting.split(":")
            entry = {**recipe, "sampler": sampler, "num_inference_steps": int(steps), "guidance_scale": float(scale),
                     "guide_step": 1000 if float(scale) != 1 else None,
                     "metrics": {**recipe["metrics"], "num_samples": args.num_samples}}
            entry["network_evaluations"] = network_evaluations(
                make_scheduler(sampler, DDPMScheduler.from_pretrained(folder / "scheduler")), int(steps),
                float(scale) != 1)
            settings = hub_entries.verification_settings(entry)
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                hub_entries._score(entry, folder, settings)
                seconds.append(time.perf_counter() - start)
            median = statistics.median(seconds)
            per_thousand = median / (entry["network_evaluations"] * args.num_samples / 1000)
            print(f"{setting:16s} {entry['network_evaluations']:4d} evaluations/image: median {median:6.1f} s per entry "
                  f"(runs: {', '.join(f'{s:.1f}' for s in seconds)}); {per_thousand:.3f} s per 1 000 image-evaluations",
                  flush=True)


if __name__ == "__main__":
    main()
