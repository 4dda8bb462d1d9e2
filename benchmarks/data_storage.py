"""Memory and step speed of unit1/train_unconditional.py with the decoded images in memory or in the on-disk cache.

For each image count and size, a folder of PNG files (the generated butterfly stand-in; at most 1 000 distinct
images, repeated under other names beyond that, so decoding costs the same per file) is trained on by the
script's own ``set_up`` and ``training_loop`` in a fresh process per variant, with ``--data_storage memory`` and
``--data_storage disk``. Each worker reports:

* peak RSS (``ru_maxrss``) after the set-up (the images decoded, no training step yet) and after training:
  every page the process touched, including pages of the memory-mapped cache file, which the kernel can drop
  and re-read at will (page cache); training adds the model's activations;
* anonymous memory (``RssAnon`` of /proc/self/status, the larger of after decoding and after training): memory
  only this process holds and that cannot be dropped -- what runs out on a machine with too little RAM;
* steps/s of the timed steps after one warm-up step (the cache is warm: decoding just wrote it).

    python benchmarks/data_storage.py                                  # 1 000 / 10 000 images at 64 / 256 px
    python benchmarks/data_storage.py --counts 300 3000 --sizes 256    # peak RSS growth against decoded size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def image_folder(root: Path, count: int, size: int, distinct: int = 1000) -> Path:
    """``count`` PNG files of ``size`` px (made once per size and count, reused by later calls)."""
    folder = root / f"images-{count}-{size}px"
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    from utils.data import synthetic_butterflies

    folder.mkdir(parents=True, exist_ok=True)
    originals = root / f"originals-{size}px"
    if not originals.is_dir() or len(list(originals.iterdir())) < min(count, distinct):
        originals.mkdir(exist_ok=True)
        for i, image in enumerate(synthetic_butterflies(min(count, distinct), size=size)):
            image.save(originals / f"{i:05d}.png")
    sources = sorted(originals.iterdir())
    for i in range(count):
        shutil.copyfile(sources[i % len(sources)], folder / f"{i:06d}.png")
    return folder


def anonymous_memory() -> int:
    """Bytes of anonymous resident memory of this process (RssAnon)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(args) -> dict:
    """Worker: set up and train the script on one folder with one storage; return memory and speed."""
    from utils.course import load_training_script

    script = load_training_script()
    output = Path(tempfile.mkdtemp(prefix="data-storage-"))
    from utils.training import MODEL_SIZES

    if args.model_size == "micro-conv-noattn":  # no attention at all: at 256 px the middle block would have 4 096 tokens
        config = output / "unet.json"
        config.write_text(json.dumps({**MODEL_SIZES["micro-conv"], "add_attention": False}))
        model = ["--model_config_name_or_path", str(config)]
    else:
        model = ["--model_size", args.model_size]
    argv = ["--train_data_dir", args.folder, "--resolution", str(args.size), *model,
            "--train_batch_size", str(args.batch_size), "--random_flip", "--max_train_steps", "100000",
            "--checkpointing_steps", "0", "--save_images_epochs", "1000000", "--save_model_epochs", "1000000",
            "--logger", "none", "--data_storage", args.storage, "--decode_threads", "2", "--cpu",
            "--output_dir", str(output)]
    settings = script.parse_args(argv)
    start = time.perf_counter()
    run = script.set_up(settings, argv)
    setup_seconds = time.perf_counter() - start
    anonymous = anonymous_memory()
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # decoding done, no training yet
    script.training_loop(run, settings, num_steps=1)  # warm-up
    start = time.perf_counter()
    script.training_loop(run, settings, num_steps=args.steps)
    seconds = time.perf_counter() - start
    anonymous = max(anonymous, anonymous_memory())
    result = {"storage": run.data_info["storage"], "count": len(run.images), "size": args.size,
              "decoded_bytes": run.images.numel(), "setup_seconds": setup_seconds,
              "steps_per_second": args.steps / seconds,
              "setup_peak_rss_bytes": setup_peak, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "anonymous_bytes": anonymous}
    shutil.rmtree(output)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--storages", nargs="+", default=["memory", "disk"], choices=("memory", "disk"))
    parser.add_argument("--repeats", type=int, default=1, help="Fresh-process runs per variant (medians reported).")
    parser.add_argument("--steps", type=int, default=10, help="Timed optimizer steps per run.")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--model_size", default="micro-conv-noattn", help="A --model_size of the script, or "
                        "micro-conv-noattn: micro-conv without its middle attention (a light model, so that the data "
                        "path weighs as much as it can in the step time).")
    parser.add_argument("--work_dir", default=str(Path(tempfile.gettempdir()) / "course-data-storage"),
                        help="Where the PNG folders are made (kept for later runs).")
    parser.add_argument("--output", help="Also write the results as JSON to this file.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args)))
        return

    rows = []
    for size in args.sizes:
        for count in args.counts:
            folder = image_folder(Path(args.work_dir), count, size)
            runs = {storage: [] for storage in args.storages}
            for _ in range(args.repeats):
                for storage in args.storages:  # alternate, so a busy machine slows both alike
                    command = [sys.executable, __file__, "--worker", "--folder", str(folder), "--size", str(size),
                               "--storage", storage, "--steps", str(args.steps), "--batch_size", str(args.batch_size),
                               "--model_size", args.model_size]
                    output = subprocess.run(command, check=True, capture_output=True, text=True,
                                            env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
                    runs[storage].append(json.loads(output.strip().splitlines()[-1]))
            for storage, results in runs.items():
                row = {key: statistics.median(r[key] for r in results) for key in results[0] if key != "storage"}
                rows.append({"storage": storage, **row})
                print(f"{count:6d} images {size:3d} px {storage:>6}: decoded {row['decoded_bytes'] / 1e9:5.2f} GB, "
                      f"peak RSS {row['peak_rss_bytes'] / 1e9:5.2f} GB, anonymous {row['anonymous_bytes'] / 1e9:5.2f} GB,"
                      f" {row['steps_per_second']:5.2f} steps/s, set-up {row['setup_seconds']:5.1f} s", flush=True)

    print(f"\n--model_size {args.model_size}, batch {args.batch_size}, {args.steps} timed steps after 1 warm-up, "
          f"medians of {args.repeats} run(s)")
    print("| images | px | storage | decoded (GB) | peak RSS after set-up (GB) | peak RSS (GB) | anonymous (GB) | "
          "steps/s | set-up (s) |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['count']:,} | {r['size']} | {r['storage']} | {r['decoded_bytes'] / 1e9:.2f} | "
              f"{r.get('setup_peak_rss_bytes', float('nan')) / 1e9:.2f} | {r['peak_rss_bytes'] / 1e9:.2f} | "
              f"{r['anonymous_bytes'] / 1e9:.2f} | {r['steps_per_second']:.2f} | {r['setup_seconds']:.1f} |")
    for size in args.sizes:
        for storage in args.storages:
            points = sorted((r["count"], r) for r in rows if r["size"] == size and r["storage"] == storage)
            if len(points) >= 2:
                (_, low), (_, high) = points[0], points[-1]
                decoded = high["decoded_bytes"] - low["decoded_bytes"]
                for when in ("setup_peak_rss_bytes", "peak_rss_bytes"):
                    growth = high[when] - low[when]
                    print(f"{size} px, {storage}: peak RSS {'after set-up' if when.startswith('setup') else 'at the end'}"
                          f" grows {growth / 1e9:.2f} GB from {low['count']:,} to {high['count']:,} images = "
                          f"{growth / decoded:.2f}x the {decoded / 1e9:.2f} GB decoded in between")
    for size in args.sizes:
        for count in args.counts:
            speeds = {r["storage"]: r["steps_per_second"] for r in rows if r["size"] == size and r["count"] == count}
            if {"memory", "disk"} <= speeds.keys():
                print(f"{count:,} images {size} px: disk cache at {speeds['disk'] / speeds['memory']:.2f}x the "
                      "in-memory step speed")
    if args.output:
        Path(args.output).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
