"""Compare samplers on a trained pipeline: sample quality and seconds per image at several step counts.

    python benchmarks/samplers.py PIPELINE_DIR [--num_samples 100] [--output_dir unit1/images]
    python benchmarks/samplers.py PIPELINE_DIR --guidance_scale 1.5 --settings ddpm:250 dpm++:25 heun:13 \
        dpm++:40@0-700
    python benchmarks/samplers.py --replot --output_dir unit1/images     # redraw from samplers.json

Runs DDPM at 1000 steps and DDIM, DPM-Solver++ and Euler at 50 / 20 / 10 steps (or the --settings given)
from the same starting noise, scores each sample set with utils.metrics (the digit metric for 1-channel
models; Inception FID for RGB models needs --reference_dataset and torch-fidelity, otherwise only the time is
reported), and writes samplers.md (a table with the command that made it), samplers.json (its numbers) and
samplers.png (quality against
network evaluations per image and against time). A setting is SAMPLER:STEPS, or SAMPLER:STEPS@LO-HI to apply
autoguidance only at the timesteps LO <= t <= HI.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from utils.metrics import MetricUnavailable, digit_metrics, inception_metrics
from utils.recipe import command_line
from utils.sampling import (
    GUIDE_FOLDER,
    SAMPLERS,
    generate,
    load_guide,
    make_scheduler,
    network_evaluations,
)

OFF_SCALE = 50  # the figure leaves out settings whose FID is above this many times the real-data floor
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm++": "DPM-Solver++ 2M", "dpm++3m": "DPM-Solver++ 3M",
                 "dpm++sde": "DPM-Solver++ SDE", "unipc": "UniPC",
                 "euler": "Euler", "euler-a": "Euler ancestral", "heun": "Heun"}


def parse_setting(text: str) -> dict:
    """'dpm++:25' -> {'sampler': 'dpm++', 'steps': 25, 'interval': None}; 'dpm++:40@0-700' adds (0.0, 700.0)."""
    try:
        sampler, rest = text.split(":", 1)
        steps, _, interval = rest.partition("@")
        steps = int(steps)
        bounds = tuple(float(v) for v in interval.split("-", 1)) if interval else None
        if bounds is not None and (len(bounds) != 2 or bounds[0] > bounds[1]):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SAMPLER:STEPS or SAMPLER:STEPS@LO-HI (e.g. dpm++:25 or "
                                         "dpm++:40@0-700, with LO <= HI)") from None
    if sampler not in SAMPLERS:
        raise argparse.ArgumentTypeError(f"unknown sampler {sampler!r} in {text!r}: choose one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of steps must be at least 1")
    return {"sampler": sampler, "steps": steps, "interval": bounds}


def setting_label(row: dict) -> str:
    interval = row.get("interval")
    suffix = f"（ガイドは t = {interval[0]:g}〜{interval[1]:g} だけ）" if interval else ""
    return SAMPLER_NAMES[row["sampler"]] + suffix


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline_dir", type=Path, nargs="?", help="a folder saved by DDPMPipeline.save_pretrained")
    parser.add_argument("--num_samples", type=int, default=100,
                        help="images per sampler setting (kept small for CPUs, where DDPM's 1000 steps dominate "
                             "the time; use 1000 for numbers comparable with the leaderboard)")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--samplers", nargs="+", default=["ddim", "dpm++", "euler"], choices=SAMPLERS)
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 20, 10])
    parser.add_argument("--ddpm_steps", type=int, default=1000, help="steps of the DDPM reference (0: skip it)")
    parser.add_argument("--settings", nargs="+", type=parse_setting, metavar="SAMPLER:STEPS[@LO-HI]",
                        help="measure exactly these settings instead of --samplers x --steps and the DDPM reference")
    parser.add_argument("--reference_dataset", help="for RGB models: a Hub dataset name whose images the samples "
                        "are compared with (Inception FID; needs torch-fidelity)")
    parser.add_argument("--guidance_scale", type=float, default=1.0,
                        help=f"autoguidance with the guide saved in PIPELINE_DIR/{GUIDE_FOLDER} (training with "
                        "--guide_step); 1 = plain sampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replot", action="store_true", help="sample nothing: redraw samplers.md and samplers.png "
                        "from the samplers.json of --output_dir (the numbers and command of an earlier run)")
    parser.add_argument("--output_dir", type=Path, default=Path("unit1/images"))
    return parser.parse_args(argv)


def load_pipeline(folder: Path):
    from diffusers import DDPMPipeline

    if not (folder / "model_index.json").is_file():
        raise SystemExit(f"error: {folder} is not a saved pipeline (it has no model_index.json). Pass the "
                         "output_dir of unit1/train_unconditional.py or a folder made with save_pretrained.")
    return DDPMPipeline.from_pretrained(folder).to("cpu")


def load_reference(name: str | None, unet, num_samples: int) -> torch.Tensor | None:
    """Real images for RGB models, at the model's resolution (None when no dataset was named)."""
    if name is None:
        return None
    from utils import images_to_tensor, load_image_dataset

    dataset = load_image_dataset(name, max_samples=2 * num_samples)
    return images_to_tensor(dataset["image"], unet.config.sample_size, unet.config.in_channels, center_crop=True)


def score(samples: torch.Tensor, reference: torch.Tensor | None) -> dict[str, float]:
    """The metric for these samples, or {} (with the reason printed) where there is none."""
    if samples.shape[1] == 1:
        return digit_metrics(samples)
    try:
        if reference is None:
            raise MetricUnavailable("RGB samples need --reference_dataset to compare with")
        return inception_metrics(samples, reference)
    except MetricUnavailable as exc:
        print(f"  (no quality metric: {exc})")
        return {}


def run(args: argparse.Namespace, on_row=None) -> list[dict]:
    """Measure every setting; ``on_row(rows)`` is called after each one (main writes the results so far)."""
    pipeline = load_pipeline(args.pipeline_dir)
    unet = pipeline.unet.eval()
    guide = load_guide(args.pipeline_dir) if args.guidance_scale != 1 else None
    if args.guidance_scale != 1 and guide is None:
        raise SystemExit(f"error: --guidance_scale {args.guidance_scale:g} needs the guide model "
                         f"{args.pipeline_dir / GUIDE_FOLDER}, which does not exist. Train with --guide_step N, or "
                         "leave --guidance_scale at 1.")
    reference = load_reference(args.reference_dataset, unet, args.num_samples)
    settings = args.settings or (
        ([{"sampler": "ddpm", "steps": args.ddpm_steps, "interval": None}] if args.ddpm_steps else [])
        + [{"sampler": sampler, "steps": steps, "interval": None} for sampler in args.samplers for steps in args.steps])
    rows = []
    for setting in settings:
        scheduler = make_scheduler(setting["sampler"], pipeline.scheduler.config)
        evaluations = network_evaluations(scheduler, setting["steps"], guided=guide is not None,
                                          guide_interval=setting["interval"])
        start, start_cpu = time.perf_counter(), time.process_time()
        samples = generate(unet, scheduler, args.num_samples, setting["steps"], batch_size=args.batch_size,
                           generator=torch.Generator().manual_seed(args.seed), progress=True, guide=guide,
                           guidance_scale=args.guidance_scale, guide_interval=setting["interval"])
        rows.append({**setting, "evaluations": evaluations,
                     "seconds_per_image": (time.perf_counter() - start) / args.num_samples,
                     "cpu_seconds_per_image": (time.process_time() - start_cpu) / args.num_samples,
                     **score(samples, reference)})
        print(f"{setting_label(setting)} {setting['steps']} steps, {evaluations} evaluations: "
              + "  ".join(f"{k} {v:.4g}" for k, v in rows[-1].items() if isinstance(v, float)), flush=True)
        if on_row is not None:
            on_row(rows)
    return rows


def _format(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _ratio(fid: float | None, floor: float | None) -> str:
    """FID over the real-data floor: two decimals, or a whole number with a thousands separator from 100x up."""
    if fid is None or not floor:
        return "—"
    ratio = fid / floor
    return f"{ratio:.2f}×" if ratio < 100 else f"{ratio:,.0f}×"


def markdown_table(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["| サンプラー | ステップ数 | ネットワーク評価回数/枚 | FID ↓ | 下限比 | coverage | 確信度 | 秒/枚（実時間） "
             "| CPU 秒/枚 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        fid = row.get("fid")
        lines.append(f"| {setting_label(row)} | {row['steps']} | {row['evaluations']} | {_format(fid)} | "
                     f"{_ratio(fid, row.get('fid_floor'))} | "
                     f"{_format(row.get('coverage'))} | {_format(row.get('confidence'))} | "
                     f"{row['seconds_per_image']:.3g} | {row['cpu_seconds_per_image']:.3g} |")
    floor = next((row["fid_floor"] for row in rows if "fid_floor" in row), None)
    guided = (f"すべての設定で、同じモデルの学習途中の重み（{GUIDE_FOLDER}/）をガイドにする autoguidance を強さ "
              f"{args.guidance_scale:g} で使っています（ガイドを使うステップではモデルを 2 回使うので、ネットワーク評価回数も "
              "2 回と数えます）。" if args.guidance_scale != 1 else "")
    lines += ["", f"各設定で同じ初期ノイズから {args.num_samples} 枚を生成し、評価しました"
              + (f"（本物どうしの FID の下限は {floor:.3g}）。" if floor is not None else "。") + guided,
              "1 つのモデルでの 1 回の測定なので、別のモデルやシードでは順位が入れ替わることがあります。",
              f"時間は生成だけを PyTorch のスレッド数 {torch.get_num_threads()} で測ったものです。実時間はマシンの混み具合で"
              "大きく変わるため、図では CPU 時間（全スレッドの合計）を使っています。",
              f"作成コマンド: `{command}`", ""]
    return "\n".join(lines)


def plot(rows: list[dict]):
    """Quality against network evaluations and against CPU seconds per image; returns the figure."""
    import matplotlib.pyplot as plt

    from utils.viz import log_axes, use_japanese_font

    use_japanese_font()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    scored = [row for row in rows if "fid" in row]
    floors = [row["fid_floor"] for row in scored if "fid_floor" in row]
    # A setting that failed outright (FID far above the floor) would squash the others: it is named, not drawn.
    limit = OFF_SCALE * max(floors) if floors else float("inf")
    failed = [row for row in scored if row["fid"] > limit]
    scored = [row for row in scored if row["fid"] <= limit]
    for label in dict.fromkeys(setting_label(row) for row in scored):
        points = sorted((row["evaluations"], row["cpu_seconds_per_image"], row["fid"]) for row in scored
                        if setting_label(row) == label)
        evaluations, seconds, fid = zip(*points)
        style = dict(marker="*", markersize=14, linestyle="none") if label == "DDPM" else dict(marker="o")
        axes[0].plot(evaluations, fid, label=label, **style)
        axes[1].plot(seconds, fid, label=label, **style)
    for ax, label in zip(axes, ("1 枚あたりのネットワーク評価回数", "1 枚あたりの CPU 時間（秒、全スレッドの合計）")):
        if floors:
            ax.axhline(sum(floors) / len(floors), color="gray", linestyle="--", label="本物どうし（下限）")
        log_axes(ax)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("FID（小さいほど良い）")
    axes[0].legend(fontsize=8)
    if failed:
        names = "、".join(f"{setting_label(row)} {row['steps']} ステップ（FID {row['fid']:.3g}）" for row in failed)
        fig.text(0.5, 0.01, f"図の範囲外（生成に失敗）: {names}", ha="center", fontsize=9)
    fig.suptitle("サンプラーごとの品質と速さ")
    fig.tight_layout(rect=(0, 0.04 if failed else 0, 1, 1))
    return fig


def replot(output_dir: Path) -> int:
    """Redraw the table and the figure from samplers.json, with the settings of the command that measured them."""
    source = output_dir / "samplers.json"
    if not source.is_file():
        raise SystemExit(f"error: --replot needs {source}, written by an earlier run with this --output_dir.")
    saved = json.loads(source.read_text(encoding="utf-8"))
    args = parse_args(shlex.split(saved["command"])[2:])
    (output_dir / "samplers.md").write_text(markdown_table(saved["rows"], args, saved["command"]), encoding="utf-8")
    if any("fid" in row for row in saved["rows"]):
        plot(saved["rows"]).savefig(output_dir / "samplers.png", dpi=120)
    print(f"redrew {output_dir / 'samplers.md'} and samplers.png from {source}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replot:
        return replot(args.output_dir)
    if args.pipeline_dir is None:
        raise SystemExit("error: give PIPELINE_DIR, the folder of a saved pipeline (or --replot to redraw a run).")
    if args.num_samples < 10 or args.batch_size < 1 or min(args.steps) < 1:
        raise SystemExit("error: --num_samples must be at least 10, --batch_size and --steps at least 1.")
    command = command_line("benchmarks/samplers.py", argv=argv)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> None:  # after every setting, so an interrupted run keeps what it measured
        (args.output_dir / "samplers.md").write_text(markdown_table(rows, args, command), encoding="utf-8")
        (args.output_dir / "samplers.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1)
                                                       + "\n", encoding="utf-8")  # the numbers behind both
        if any("fid" in row for row in rows):
            import matplotlib.pyplot as plt

            figure = plot(rows)
            figure.savefig(args.output_dir / "samplers.png", dpi=120)
            plt.close(figure)

    rows = run(args, on_row=write)
    print(markdown_table(rows, args, command))
    if any("fid" in row for row in rows):
        print(f"wrote {args.output_dir / 'samplers.md'}, samplers.json and samplers.png")
    else:
        print(f"wrote {args.output_dir / 'samplers.md'} and samplers.json (no quality metric, so no figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
