"""Platform matrix: build fresh virtual environments and run the unit tests and both notebooks in each.

    python tools/platform_matrix.py                       # floors, colab-2026-08, kaggle and newest
    python tools/platform_matrix.py --envs floors --lock /tmp/torch.lock --output matrix.md
    python tools/platform_matrix.py --combine floors.json kaggle.json --output matrix.md   # one table of runs

Environments (each a fresh venv on its platform's Python with its platform's torch, see PLATFORMS):
  floors         every runtime requirement of requirements.txt at its floor (``>=X`` installed as ``==X``);
                 the tooling half at its newest releases
  colab-2026-08  requirements.txt constrained by constraints/colab-2026-08.txt (Colab's preinstalled versions)
  kaggle         requirements.txt constrained by constraints/kaggle-2026-08.txt (Python 3.12)
  newest         requirements.txt as a fresh install resolves it today

In each it runs, in quick mode, ``python -m pytest tests -m "not slow"`` (unit tests, offline),
``python -m pytest unit1`` (both notebooks through nbval, offline) and the quick-online case of
tests/test_notebooks.py (both notebooks opened alone, their online code against the local Hub of
tests/hub_server.py on 127.0.0.1, so each platform's huggingface_hub/datasets pair is tried over the wire), and
prints a Markdown table of the results. PyPI's Linux torch is a CUDA build that also runs on a CPU. The wheels
are downloaded into a folder under the workdir (wheels/; pip download keeps the files it finds there) and
installed from it alone, so a rerun does not download them again; this machine's pip configuration (a cap on torch, local wheel folders) is not read, so each venv
resolves as a fresh machine's pip does. Installing
needs PyPI; the test runs need no network beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
SPLIT = "# --- tests and tooling"  # utils.setup.REQUIREMENTS_SPLIT; repeated so the tool runs without the course installed
COLAB_CONSTRAINTS = ROOT / "constraints" / "colab-2026-08.txt"
KAGGLE_CONSTRAINTS = ROOT / "constraints" / "kaggle-2026-08.txt"
# Each environment's Python (a minor version: `pyenv prefix 3.10` finds its newest installed patch, or give it with
# --python) and torch requirement. The weekly workflow's matrix repeats the Python versions; a test holds them equal.
PLATFORMS = {
    "floors": ("3.10", "torch==2.4.0"),         # the oldest Python the README promises, torch's floor (has cp310 wheels)
    "colab-2026-08": ("3.13", "torch==2.11.0"),  # Colab: Python 3.13, torch 2.11.0+cu128 (PyPI's runs on a CPU)
    "kaggle": ("3.12", "torch==2.10.0"),         # Kaggle: Colab's image of 2026-05-14, Python 3.12
    "newest": ("3.13", "torch"),
}
ENVIRONMENTS = tuple(PLATFORMS)
REPORTED = ("torch", "diffusers", "datasets", "huggingface_hub", "accelerate", "safetensors", "ipywidgets", "numpy",
            "pyarrow", "pandas", "matplotlib", "mlxtend", "tqdm", "tensorboard")
TEST_ENV = {"COURSE_QUICK": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
# What each environment runs: (result key, pytest arguments). The online run is the CI suite's own test, which
# starts the local Hub and gives the notebooks' kernel HF_ENDPOINT (its fixture overrides HF_HUB_OFFLINE).
TEST_RUNS = (
    ("unit_tests", ["tests", "-m", "not slow"]),
    ("notebooks", ["unit1"]),
    ("online_notebooks", ["tests/test_notebooks.py::test_both_notebooks_run_opened_alone[quick-online]"]),
)


def _lines(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def runtime_requirements(path: Path = REQUIREMENTS) -> list[Requirement]:
    """The runtime half of requirements.txt (what the notebooks' setup cell installs)."""
    text = path.read_text(encoding="utf-8")
    if SPLIT not in text:
        raise ValueError(f"{path}: the divider {SPLIT!r} is missing")
    return [Requirement(line) for line in _lines(text.split(SPLIT)[0])]


def tooling_requirements(path: Path = REQUIREMENTS) -> list[str]:
    after = path.read_text(encoding="utf-8").split(SPLIT)[1]
    return _lines(after.split("\n", 1)[1] if "\n" in after else "")  # the divider line's own words are no requirement


def floor(requirement: Requirement) -> str:
    """The version a ``>=`` specifier names; a requirement without one has no floor to test."""
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise ValueError(f"{requirement}: give exactly one '>=' floor so that the floor can be tested")
    return floors[0]


def floor_pins(path: Path = REQUIREMENTS) -> list[str]:
    """``name==floor`` for every runtime requirement except torch (each environment names its torch: PLATFORMS)."""
    return [f"{req.name}=={floor(req)}" for req in runtime_requirements(path) if req.name != "torch"]


def read_constraints(path: Path) -> dict[str, str]:
    """``name==version`` lines of a constraints file as {name: version}."""
    pins = {}
    for line in _lines(path.read_text(encoding="utf-8")):
        name, sep, version = line.partition("==")
        if not sep:
            raise ValueError(f"{path}: {line!r} is not a 'name==version' pin")
        pins[name.strip()] = version.strip()
    return pins


def install_arguments(name: str, workdir: Path) -> list[str]:
    if name == "floors":
        pinned = workdir / "floors-requirements.txt"
        pinned.write_text("\n".join([*floor_pins(), *tooling_requirements()]) + "\n", encoding="utf-8")
        return ["-r", str(pinned)]
    if name == "colab-2026-08":
        return ["-r", str(REQUIREMENTS), "-c", str(COLAB_CONSTRAINTS)]
    if name == "kaggle":
        return ["-r", str(REQUIREMENTS), "-c", str(KAGGLE_CONSTRAINTS)]
    if name == "newest":
        return ["-r", str(REQUIREMENTS)]
    raise ValueError(f"unknown environment {name!r}: choose from {', '.join(ENVIRONMENTS)}")


def interpreter(name: str, given: dict[str, str], current: str = sys.executable) -> str:
    """The Python for an environment: --python NAME=PATH, else this interpreter if its minor version is the
    environment's, else pyenv's newest installed patch of that version."""
    if name in given:
        return given[name]
    version = PLATFORMS[name][0]
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return current
    found = subprocess.run(["pyenv", "prefix", version], capture_output=True, text=True) \
        if shutil.which("pyenv") else None
    if found is None or found.returncode != 0:
        raise SystemExit(f"{name} needs Python {version}: give --python {name}=/path/to/python{version}")
    return str(Path(found.stdout.strip()) / "bin" / "python")


def torch_requirement(name: str, given: str | None = None) -> str:
    """``--torch VERSION`` for every environment, else each platform's own torch."""
    return f"torch=={given}" if given else PLATFORMS[name][1]


TORCH_BUILD = ("import torch; cuda = torch.version.cuda; "
               "print(torch.__version__ + (f'（CUDA {cuda} 版、CPU で実行）' if cuda else ''))")


def pip_environment() -> dict:
    """os.environ without this machine's pip configuration: no config file is read (PIP_CONFIG_FILE=devnull), no
    local wheel folder or constraint from the environment (a machine's cap would hold newest at an old torch)."""
    env = {key: value for key, value in os.environ.items() if key not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT")}
    return {**env, "PIP_CONFIG_FILE": os.devnull}


def wheel_folder(workdir: Path, torch_index: str | None) -> tuple[Path, list[str]]:
    """Where an environment's wheels are kept between runs, and the extra index torch comes from.

    With --torch-index the index's torch (``2.11.0+cpu``) sorts above PyPI's ``2.11.0`` and is the one taken; its
    wheels get a folder of their own so that a later run without the index does not take them.
    """
    if torch_index is None:
        return workdir / "wheels", []
    return workdir / ("wheels-" + re.sub(r"[^A-Za-z0-9]+", "-", torch_index).strip("-")), ["--extra-index-url",
                                                                                           torch_index]


def _run(command, log: Path, env=None, lock: str | None = None) -> tuple[int, str, float]:
    if lock:
        command = ["flock", lock, *command]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    return result.returncode, result.stdout + result.stderr, seconds


def pytest_summary(output: str) -> str:
    """The counts of pytest's last summary line, e.g. '183 passed, 2 deselected'."""
    for line in reversed(output.strip().splitlines()):
        if re.search(r"\d+ (passed|failed|error)", line):
            counts = re.findall(r"\d+ (?:passed|failed|errors?|skipped|xfailed|deselected)", line)
            return ", ".join(counts)
    return "no pytest summary (see the log)"


def pytest_seconds(output: str) -> float | None:
    """The duration of pytest's last summary line ('... in 61.20s'), without the time spent waiting for a lock."""
    found = re.findall(r"\d+ (?:passed|failed|errors?)\b.* in ([\d.]+)s", output)
    return float(found[-1]) if found else None


def build_and_test(name: str, workdir: Path, torch: str, lock: str | None, phase: str = "all",
                   torch_index: str | None = None, base_python: str = sys.executable) -> dict:
    venv = workdir / name
    python = str(venv / "bin" / "python")
    result = {"environment": name}
    os.environ.setdefault("PIP_CACHE_DIR", str(workdir / "pip-cache"))
    if phase in ("all", "install"):
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
        start = time.perf_counter()
        wheels, sources = wheel_folder(workdir, torch_index)
        wanted = [torch, *install_arguments(name, workdir)]
        # The wheels go to a folder first (pip download keeps a file it finds there; pip's HTTP cache keeps nothing
        # where a proxy strips the caching headers), then the venv installs from that folder alone.
        code, output, _ = _run([python, "-m", "pip", "download", "--no-input", "-q", "-d", str(wheels), *sources,
                                *wanted], workdir / f"{name}-download.log", env=pip_environment())
        if code == 0:
            code, output, _ = _run([python, "-m", "pip", "install", "--no-input", "-q", "--no-index", "--find-links",
                                    str(wheels), *wanted], workdir / f"{name}-install.log", env=pip_environment())
        seconds = time.perf_counter() - start
        result["install_seconds"] = round(seconds)
        if code != 0:
            result["install"] = "failed: " + (output.strip().splitlines() or [""])[-1]
            return result
        if phase == "install":
            result["install"] = "ok"
            return result
    elif not Path(python).exists():
        raise SystemExit(f"{venv} does not exist: run with --phase install (or all) first")
    result["install"] = "ok"
    freeze = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True).stdout
    installed = {row["name"].lower().replace("-", "_"): row["version"] for row in json.loads(freeze)}
    result["versions"] = {pkg: installed.get(pkg.lower(), "—") for pkg in REPORTED}
    result["python"] = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                                      capture_output=True, text=True, check=True).stdout.strip()
    result["torch"] = subprocess.run([python, "-c", TORCH_BUILD], capture_output=True, text=True,
                                     check=True).stdout.strip()
    env = {**os.environ, **TEST_ENV, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    for key, command in TEST_RUNS:
        code, output, seconds = _run([python, "-m", "pytest", "-q", *command], workdir / f"{name}-{key}.log",
                                     env=env, lock=lock)
        result[key] = ("ok: " if code == 0 else "FAILED: ") + pytest_summary(output)
        result[f"{key}_seconds"] = round(pytest_seconds(output) or seconds)  # not the wait for the lock
    return result


TABLE_HEADER = ("| 環境 | Python | torch | おもなバージョン | 単体テスト（`-m \"not slow\"`） "
                "| ノートブック 2 つ（オフライン） | ノートブック 2 つ（オンライン、ローカルの Hub） |")


# The table is for learners, so its cells are Japanese; the JSON keeps pytest's English words.
PYTEST_WORDS = {"passed": "合格", "failed": "失敗", "error": "エラー", "errors": "エラー", "skipped": "スキップ",
                "xfailed": "想定どおりの失敗", "deselected": "対象外"}


def japanese_summary(summary: str) -> str:
    """'429 passed, 33 deselected' as '429 件合格、33 件対象外'."""
    counts = re.findall(r"(\d+) (\w+)", summary)
    if not counts or any(word not in PYTEST_WORDS for _, word in counts):
        return "pytest の集計なし（ログを参照）" if summary.startswith("no pytest summary") else summary
    return "、".join(f"{count} 件{PYTEST_WORDS[word]}" for count, word in counts)


def _cell(result: dict, key: str) -> str:
    if key not in result:
        install = result.get("install", "—")
        return "—" if install in ("ok", "—") else "インストールに失敗: " + install.removeprefix("failed: ")
    verdict, _, summary = result[key].partition(": ")
    seconds = result.get(f"{key}_seconds")
    return (("成功" if verdict == "ok" else "失敗") + f"（{japanese_summary(summary)}"
            + (f"、{seconds} 秒）" if seconds is not None else "）"))


def markdown_table(results: list[dict]) -> str:
    """The README's table (the block between the platform-matrix markers): one row per environment."""
    rows = [TABLE_HEADER, "|---|---|---|---|---|---|---|"]
    for r in results:
        versions = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items() if k != "torch")
        rows.append(f"| {r['environment']} | {r.get('python', '—')} | {r.get('torch', '—')} | {versions or '—'} | "
                    + " | ".join(_cell(r, key) for key, _ in TEST_RUNS) + " |")
    return "\n".join(rows)


def combine(paths: list[Path]) -> list[dict]:
    """The results of several runs (the JSON files --output writes), in ENVIRONMENTS order."""
    results = [row for path in paths for row in json.loads(path.read_text(encoding="utf-8"))]
    return sorted(results, key=lambda r: ENVIRONMENTS.index(r["environment"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVIRONMENTS), choices=ENVIRONMENTS)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/platform-matrix"),
                        help="where the venvs and logs go (each venv is rebuilt from scratch)")
    parser.add_argument("--torch", help="one torch version for every environment (default: each platform's own)")
    parser.add_argument("--python", action="append", default=[], metavar="ENV=PATH",
                        help="the interpreter of an environment (default: its Python version from pyenv)")
    parser.add_argument("--torch-index", help="take torch from this index, e.g. https://download.pytorch.org/whl/cpu"
                        " (PyPI's Linux torch is the multi-GB CUDA build)")
    parser.add_argument("--lock", help="run the test commands under `flock LOCK` (a shared machine)")
    parser.add_argument("--phase", choices=("all", "install", "test"), default="all",
                        help="install: only build the venvs; test: only test venvs built before")
    parser.add_argument("--output", type=Path, help="also write the Markdown table and a JSON file beside it")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                        help="build nothing: one table of the results in these JSON files (from --output)")
    args = parser.parse_args(argv)
    if args.combine:
        results = combine(args.combine)
        table = markdown_table(results)
        print(table)
        if args.output:
            args.output.write_text(table + "\n", encoding="utf-8")
        return 0 if all(all(r.get(key, "").startswith("ok") for key, _ in TEST_RUNS) for r in results) else 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    pythons = dict(item.split("=", 1) for item in args.python)
    results = []
    for name in args.envs:
        print(f"== {name}", flush=True)
        results.append(build_and_test(name, args.workdir, torch_requirement(name, args.torch), args.lock,
                                      args.phase, args.torch_index, interpreter(name, pythons)))
        print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    table = markdown_table(results)
    print(table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")
    if args.phase == "install":
        return 0 if all(r["install"] == "ok" for r in results) else 1
    ok = all(all(r.get(key, "").startswith("ok") for key, _ in TEST_RUNS) for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
