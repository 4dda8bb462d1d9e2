"""Run both notebooks top to bottom, unchanged, and write how long each cell took.

    python benchmarks/notebook_times.py --output benchmarks/results/full_mode       # full mode, on a GPU machine
    python benchmarks/notebook_times.py --quick --output benchmarks/results/quick_mode  # quick mode, on a CPU
    python benchmarks/notebook_times.py --allow-cpu --notebooks unit1/02_diffusion_models_from_scratch.ipynb

Writes ``<output>.md`` (a table per notebook: cell, first line, seconds) and ``<output>.json``, both naming the
mode and the device the times were measured on. Full mode (COURSE_QUICK=0, the default) is sized for a GPU (a
Colab T4): on a CPU it takes hours, so the script refuses to run there unless --allow-cpu is given. --quick runs
quick mode (COURSE_QUICK=1) with its real iteration counts, on any device: the nightly workflow runs it, so
"about 6 minutes on 2 CPU cores" is a dated measurement, and the notebooks' own checks (the loss falls, the
pipeline reloads the same weights, ...) are asserted at those counts. The notebooks run in their own folder (so the
setup cell finds this repository; their outputs go to unit1/outputs/), with the Hub online unless
HF_HUB_OFFLINE=1. A failing cell stops its notebook: its error is printed, the times so far are written, and the
exit code is 1.
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


def _print_time(cell, cell_index, execute_reply) -> None:
    seconds = _seconds(cell)
    print(f"  cell {cell_index}: {'—' if seconds is None else f'{seconds:.1f} s'}", flush=True)


def time_notebook(path: Path, workdir: Path, timeout: int, executed: Path | None = None) -> tuple[list[dict], str | None]:
    """Execute ``path`` in ``workdir``; return one row per code cell and the error of a failing cell (or None).

    With ``executed``, the notebook with its outputs (figures, printed checks) is also written into that folder."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=True,
                                     resources={"metadata": {"path": str(workdir)}},
                                     on_cell_executed=_print_time)  # progress, and the times of a run stopped early
    error = None
    try:
        client.execute()
    except Exception as failure:  # a failing cell, a cell timeout, a dead kernel: keep the times so far
        error = f"{type(failure).__name__}: {failure}"
    if executed is not None:
        executed.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, executed / path.name)
    rows = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            rows.append({"cell": index, "first_line": first[:70], "seconds": _seconds(cell)})
    return rows, error


def device_name() -> str:
    import torch

    from utils.environment import cuda_usable, describe_device

    return describe_device(torch.device("cuda" if cuda_usable() else "cpu"))


def markdown(results: dict, mode: str, device: str) -> str:
    parts = [f"{mode}, measured on {device}, {datetime.now():%Y-%m-%d}."]
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
    parser.add_argument("--quick", action="store_true", help="quick mode (COURSE_QUICK=1) instead of full mode")
    parser.add_argument("--output", type=Path, default=None,
                        help="writes OUTPUT.md and OUTPUT.json (default benchmarks/results/full_mode or quick_mode)")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds allowed per cell")
    parser.add_argument("--executed", type=Path, help="also write the executed notebooks (with outputs) here")
    parser.add_argument("--allow-cpu", action="store_true", help="full mode even without a usable GPU (takes hours)")
    args = parser.parse_args(argv)
    output = args.output or ROOT / "benchmarks" / "results" / ("quick_mode" if args.quick else "full_mode")
    mode = "Quick mode (COURSE_QUICK=1)" if args.quick else "Full mode (COURSE_QUICK=0)"

    device = device_name()
    if device.startswith("cpu") and not (args.quick or args.allow_cpu):
        print(f"No usable GPU here ({device}): full mode is sized for a GPU and would take hours on this CPU. "
              "Run it on a GPU machine, pass --quick for quick mode, or pass --allow-cpu to measure full mode on "
              "this CPU anyway.", file=sys.stderr)
        return 2
    os.environ["COURSE_QUICK"] = "1" if args.quick else "0"  # the kernels inherit it
    results, failed = {}, []
    for notebook in args.notebooks:
        path = (ROOT / notebook).resolve()
        if not path.is_file():
            parser.error(f"{notebook}: no such notebook")
        start = time.perf_counter()
        results[notebook], error = time_notebook(path, path.parent, args.timeout, args.executed)
        print(f"{notebook}: {time.perf_counter() - start:.0f} s on {device}", flush=True)
        if error:
            print(f"{notebook} failed:\n{error}", file=sys.stderr)
            failed.append(notebook)
        write_results(output, mode, device, results, failed)  # after each notebook: a stopped run keeps its rows
    print(f"wrote {output.with_suffix('.md')} and {output.with_suffix('.json')}")
    return 1 if failed else 0


def write_results(output: Path, mode: str, device: str, results: dict, failed: list[str]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text(markdown(results, mode, device), encoding="utf-8")
    output.with_suffix(".json").write_text(json.dumps({"mode": mode, "device": device, "notebooks": results,
                                                       "failed": failed}, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
