"""Run both notebooks in full mode (COURSE_QUICK=0) and write how long each cell took.

    python benchmarks/full_mode_times.py --output benchmarks/results/full_mode   # on a GPU machine
    python benchmarks/full_mode_times.py --allow-cpu --notebooks unit1/02_diffusion_models_from_scratch.ipynb

Writes ``<output>.md`` (a table per notebook: cell, first line, seconds) and ``<output>.json``, both naming the
device the times were measured on. Full mode is sized for a GPU (a Colab T4): on a CPU it takes hours, so the
script refuses to run there unless --allow-cpu is given. The notebooks run unchanged, in their own folder (so the
setup cell finds this repository; their outputs go to unit1/outputs/), with the Hub online unless HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("unit1/01_introduction_to_diffusers.ipynb", "unit1/02_diffusion_models_from_scratch.ipynb")


def _seconds(cell) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_notebook(path: Path, workdir: Path, timeout: int) -> list[dict]:
    """Execute ``path`` in ``workdir`` (full mode) and return one row per code cell."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=True,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    rows = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            rows.append({"cell": index, "first_line": first[:70], "seconds": _seconds(cell)})
    return rows


def device_name() -> str:
    import torch

    from utils.environment import cuda_usable, describe_device

    return describe_device(torch.device("cuda" if cuda_usable() else "cpu"))


def markdown(results: dict, device: str) -> str:
    parts = [f"Full mode (COURSE_QUICK=0), measured on {device}, {datetime.now():%Y-%m-%d}."]
    for notebook, rows in results.items():
        total = sum(r["seconds"] or 0 for r in rows)
        parts += ["", f"### {notebook} — {total / 60:.1f} min", "", "| cell | first line | seconds |", "|--:|:--|--:|"]
        for r in rows:
            seconds = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
            parts.append(f"| {r['cell']} | `{r['first_line'].replace('|', '/')}` | {seconds} |")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/full_mode"),
                        help="writes OUTPUT.md and OUTPUT.json")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds allowed per cell")
    parser.add_argument("--allow-cpu", action="store_true", help="run even without a usable GPU (takes hours)")
    args = parser.parse_args(argv)

    device = device_name()
    if device.startswith("cpu") and not args.allow_cpu:
        print(f"No usable GPU here ({device}): full mode is sized for a GPU and would take hours on this CPU. "
              "Run it on a GPU machine, or pass --allow-cpu to measure CPU times anyway.", file=sys.stderr)
        return 2
    os.environ["COURSE_QUICK"] = "0"  # the kernels inherit it
    results = {}
    for notebook in args.notebooks:
        path = (ROOT / notebook).resolve()
        if not path.is_file():
            parser.error(f"{notebook}: no such notebook")
        start = time.perf_counter()
        results[notebook] = time_notebook(path, path.parent, args.timeout)
        print(f"{notebook}: {time.perf_counter() - start:.0f} s on {device}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(markdown(results, device), encoding="utf-8")
    args.output.with_suffix(".json").write_text(json.dumps({"device": device, "notebooks": results}, indent=1,
                                                           ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output.with_suffix('.md')} and {args.output.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
