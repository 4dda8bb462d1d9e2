"""Helpers for tests that run a notebook the way a learner's platform does (not a test module itself).

- ``snapshot_repository``: a git repository (branch main) of this working tree's tracked files, so a notebook's
  setup cell can ``git clone`` the course offline through COURSE_REPO_URL, as Colab clones it from GitHub.
- ``settings_cell`` / ``insert_after_settings``: find the one knob cell of a notebook and put a cell after it.
- ``mode_settings`` / ``notebook_objects``: a notebook's settings in one mode, and the objects its top-level
  statements define (its models, built outside the notebook at their real sizes: tests/test_full_sizes.py).
- ``run_alone``: copies of notebooks with their iteration counts capped (``CAPS``), opened alone in an empty folder
  as Colab and Kaggle open a notebook, run top to bottom under nbval in a fresh pytest.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from utils import course

ROOT = Path(__file__).resolve().parent.parent
CLONE_NAME = course.GITHUB_REPO.split("/")[1]  # the folder the setup cell clones into
FROM_THE_CLONE = (f"import pathlib as _pathlib, sys as _sys\n"
                  f"_clone = _pathlib.Path.cwd().resolve() / {CLONE_NAME!r}\n"
                  f"assert _pathlib.Path(_sys.modules['utils'].__file__).resolve().is_relative_to(_clone), "
                  f"_sys.modules['utils'].__file__")
# Iteration counts that every notebook run in the test suite caps (model widths, data sizes, schedules and the
# script's arguments stay those of its mode): the code path is the same, only the loops are short. The nightly
# workflow runs the notebooks unchanged, with quick mode's real counts (benchmarks/notebook_times.py --quick).
CAPS = {
    "unit1/01_introduction_to_diffusers.ipynb": {
        # 256 images: an epoch of 4 full batches of 64 instead of 16 (the loss cell compares the first and last step;
        # the online run's Hub serves 64 images)
        "num_images": 256, "num_epochs": 1, "sample_steps": 2, "ddim_steps": 2, "pretrained_steps": 2,
        "script_epochs": 1, "script_max_steps": 1, "script_checkpointing_steps": 1,
    },
    "unit1/02_diffusion_models_from_scratch.ipynb": {
        # 21 steps: the notebook checks that the sum of the last 20 losses is below that of the first 20
        "naive_train_steps": 21, "ddpm_train_steps": 21, "ddpm_sampling_steps": 4, "fast_sampling_steps": 2,
    },
}
# The full-mode run also trains its full-width models at quick mode's batch size: a batch of 64 or 128 on the CPU
# takes minutes and runs no other code. tests/test_full_sizes.py builds the same models and measures their memory
# for training at the full batch size.
FULL_CAPS = {
    "unit1/01_introduction_to_diffusers.ipynb": {"batch_size": 16, "num_images": 128},  # 8 steps in the epoch
    "unit1/02_diffusion_models_from_scratch.ipynb": {"batch_size": 16},
}


def snapshot_repository(destination: Path, branch: str = "main") -> Path:
    """Copy the tracked files of the working tree into ``destination`` and commit them there on ``branch``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    git = ["git", "-c", "user.name=tests", "-c", "user.email=tests@example.com", "-C", str(destination)]
    subprocess.run([*git, "init", "-q", "-b", branch], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot of the working tree"], check=True)
    return destination


def settings_cell(notebook) -> int:
    """Index of the knob cell: the one code cell that branches on ``quick`` at its top level."""
    found = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and re.search(r"^if quick:", cell.source, re.M) and "else:" in cell.source]
    if len(found) != 1:
        raise ValueError(f"expected exactly one settings cell ('if quick: … else: …'), found {len(found)}")
    return found[0]


def mode_settings(path: str, quick: bool) -> dict:
    """The names the settings cell of the notebook at ``path`` sets in the given mode."""
    notebook = read_notebook(ROOT / path)
    namespace = {"quick": quick}
    exec(compile(notebook.cells[settings_cell(notebook)].source, f"{path}:settings", "exec"), namespace)
    return {name: value for name, value in namespace.items() if name != "__builtins__"}


def notebook_objects(path: str, names, namespace: dict) -> dict:
    """Run the top-level statements of the notebook at ``path`` that define ``names`` (a def, a class or an
    assignment, in notebook order; the rest of their cells does not run) in ``namespace`` and return the objects.

    A missing name is an error: what the tests build must be what the notebook builds.
    """
    found = set()
    for index, cell in enumerate(read_notebook(ROOT / path).cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined = {node.name}
            elif isinstance(node, ast.Assign):
                defined = {target.id for target in node.targets if isinstance(target, ast.Name)}
            else:
                continue
            if defined & set(names):
                exec(compile(ast.Module([node], []), f"{path}:cell {index}", "exec"), namespace)
                found |= defined
    missing = set(names) - found
    if missing:
        raise ValueError(f"{path} no longer defines {sorted(missing)} at the top level of a cell: update the test")
    return {name: namespace[name] for name in names}


def assigned_names(source: str) -> set[str]:
    return set(re.findall(r"^\s*([A-Za-z_]\w*)\s*=", source, re.M))


def insert_after_settings(notebook, source: str, names) -> int:
    """Insert a code cell after the settings cell; every name in ``names`` must be set in the settings cell."""
    index = settings_cell(notebook)
    missing = set(names) - assigned_names(notebook.cells[index].source)
    if missing:
        raise ValueError(f"the settings cell does not set {sorted(missing)}: update the caps of this test")
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return index + 1


def read_notebook(path: Path):
    return nbformat.read(path, as_version=4)


def cap_cell(caps: dict, quick: bool) -> str:
    """The cell inserted after the settings cell: the mode's sizes stay, only the iteration counts shrink."""
    mode = "クイック" if quick else "フル"
    lines = [f"# tests/notebook_runs.py が挿入したセル: {mode}モードの設定のまま、くり返しの回数だけを減らします",
             f'assert {"" if quick else "not "}quick, '
             f'"this copy must run the {"quick" if quick else "full"}-mode settings (COURSE_QUICK={int(quick)})"']
    return "\n".join([*lines, *(f"{name} = {value!r}" for name, value in caps.items())])


def capped_notebook(path: str, quick: bool, extra_cells=()):
    """The notebook at ``path`` with the cap cell of ``CAPS[path]`` (and in full mode ``FULL_CAPS[path]``) after its
    settings cell and ``extra_cells`` at its end."""
    notebook = read_notebook(ROOT / path)
    caps = CAPS[path] if quick else {**CAPS[path], **FULL_CAPS[path]}
    insert_after_settings(notebook, cap_cell(caps, quick), caps)
    notebook.cells.extend(nbformat.v4.new_code_cell(source) for source in extra_cells)
    return notebook


def run_alone(paths, folder: Path, origin: Path, env: dict, *, quick: bool, extra_cells=None,
              timeout: int = 3600) -> subprocess.CompletedProcess:
    """Run capped copies of the notebooks at ``paths`` under nbval, opened alone in the empty ``folder``.

    Each copy's setup cell clones the course from ``origin`` (a ``snapshot_repository``) through COURSE_REPO_URL,
    as Colab clones it from GitHub, and a last cell checks that the kernel imported utils from that clone (not from
    this checkout, which ``pip install -e .`` makes importable everywhere). A second pytest runs them because the
    kernel must start with ``env`` (HF_ENDPOINT, for one, is read when huggingface_hub is imported).
    ``extra_cells`` maps a path to sources of cells to append. Fails unless every cell passes and the course was
    cloned next to the copies.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for path in paths:
        name = Path(path).name
        cells = [*(extra_cells or {}).get(path, ()), FROM_THE_CLONE]
        nbformat.write(capped_notebook(path, quick, cells), folder / name)
        names.append(name)
    env = {**env, "COURSE_QUICK": str(int(quick)), "COURSE_REPO_URL": str(origin)}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=1800", "-q",
                             "-p", "no:cacheprovider", "--rootdir", str(folder), *names],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert (folder / CLONE_NAME / "utils" / "__init__.py").is_file() and not (folder / "utils").exists()
    return result

