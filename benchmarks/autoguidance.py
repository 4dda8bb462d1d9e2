"""Choose an autoguidance guide after training: score guide checkpoints and guidance scales of one run.

    python benchmarks/autoguidance.py RUN_DIR [--guide_steps 500 1000 2000] [--scales 1.5 2] [--num_samples 1000]

RUN_DIR is an output_dir of unit1/train_unconditional.py that kept its checkpoints (--checkpointing_steps).
For every guide step and scale, the run's final pipeline samples from the same noise with that checkpoint's
EMA weights as the guide (its raw weights when the run had no EMA), and utils.metrics scores the images; a
first row without guidance is the reference. Writes autoguidance.md (a table with the command that made it).
Digit (1-channel) models only: RGB models have no offline metric. Pass the chosen pair to the training script
as --guide_step / --guidance_scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils.recipe import command_line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="an output_dir of unit1/train_unconditional.py with checkpoints")
    parser.add_argument("--guide_steps", type=int, nargs="+", default=[500, 1000, 2000],
                        help="checkpoint steps to try as the guide")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0], help="guidance scales to try")
    parser.add_argument("--num_samples", type=int, default=1000, help="images per setting (1000 to compare with "
                        "the leaderboard)")
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--sampler", default="ddpm")
    parser.add_argument("--num_inference_steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=Path, help="where autoguidance.md goes (default: RUN_DIR)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict]:
    from diffusers import DDPMPipeline

    from utils.checkpoints import checkpoint_weights, list_checkpoints, make_guide
    from utils.metrics import evaluate_pipeline
    from utils.training import ConfigError

    if not (args.run_dir / "model_index.json").is_file():
        raise SystemExit(f"error: {args.run_dir} is not a saved pipeline (no model_index.json): pass the "
                         "output_dir of a finished unit1/train_unconditional.py run.")
    missing = [step for step in args.guide_steps if not (args.run_dir / f"checkpoint-{step}").is_dir()]
    if missing:
        kept = [int(p.name.split("-")[1]) for p in list_checkpoints(args.run_dir)]
        raise SystemExit(f"error: no checkpoint for step(s) {missing} in {args.run_dir}; it has {kept or 'none'}. "
                         "Train with --checkpointing_steps to keep guides to choose from.")
    pipeline = DDPMPipeline.from_pretrained(args.run_dir).to("cpu")
    if pipeline.unet.config.in_channels != 1:
        raise SystemExit("error: only 1-channel digit models have an offline metric to choose a guide with.")
    try:  # each checkpoint's EMA weights (raw weights without EMA) as the guide, read once, not once per scale
        guides = {None: None}
        for step in args.guide_steps:
            guides[step] = make_guide(pipeline.unet, checkpoint_weights(args.run_dir / f"checkpoint-{step}"))
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    settings = [(None, 1.0)] + [(step, scale) for step in args.guide_steps for scale in args.scales]
    rows = []
    for step, scale in settings:
        guide = guides[step]
        start = time.perf_counter()
        metrics = evaluate_pipeline(pipeline, num_samples=args.num_samples, batch_size=args.batch_size,
                                    sampler=args.sampler, num_inference_steps=args.num_inference_steps,
                                    seed=args.seed, progress=False, guide=guide, guidance_scale=scale)
        rows.append({"guide_step": step, "scale": scale, "seconds": time.perf_counter() - start, **metrics})
        print(f"guide {step or '-':>5} scale {scale:g}: FID {metrics['fid']:.3f} ({metrics['fid'] / metrics['fid_floor']:.2f}x)"
              f"  coverage {metrics['coverage']:.3f}  confidence {metrics['confidence']:.3f}", flush=True)
    return rows


def markdown_table(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["| ガイド（ステップ） | 強さ w | FID ↓ | 下限比 | coverage | 確信度 | 生成時間（秒） |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        guide = "なし" if row["guide_step"] is None else f"{row['guide_step']:,}"
        lines.append(f"| {guide} | {row['scale']:g} | {row['fid']:.3g} | {row['fid'] / row['fid_floor']:.2f}× | "
                     f"{row['coverage']:.3g} | {row['confidence']:.3g} | {row['seconds']:.0f} |")
    lines += ["", f"{args.run_dir.name} の最後の重みで、各設定とも同じ初期ノイズから {args.num_samples} 枚を、サンプラー "
              f"`{args.sampler}` の {args.num_inference_steps} ステップで生成し、評価しました。ガイドは同じモデルの各チェックポイントの "
              "EMA の重み（学習途中の重み）です。1 つのモデルでの 1 回の測定です。",
              f"作成コマンド: `{command}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.num_samples < 10 or args.batch_size < 1 or min(args.scales) <= 0 or min(args.guide_steps) < 1:
        raise SystemExit("error: --num_samples must be at least 10, --batch_size and --guide_steps at least 1, "
                         "--scales positive.")
    command = command_line("benchmarks/autoguidance.py", argv=argv)
    rows = run(args)
    output_dir = args.output_dir or args.run_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, args, command)
    (output_dir / "autoguidance.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
