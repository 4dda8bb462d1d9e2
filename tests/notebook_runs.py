"""Helpers for tests that run a notebook the way a learner's platform does (not a test module itself).

- ``snapshot_repository``: a git repository (branch main) of this working tree's tracked files, so a notebook's
  setup cell can ``git clone`` the course offline through COURSE_REPO_URL, as Colab clones it from GitHub.
- ``settings_cell`` / ``insert_after_settings``: find the one knob cell of a notebook and put a cell after it.
- ``training_memory_code``: source of a cell that estimates a model's GPU memory for training (to a JSON file).
- ``run_alone``: copies of notebooks with their iteration counts capped (``CAPS``), opened alone in an empty folder
  as Colab and Kaggle open a notebook, run top to bottom under nbval in a fresh pytest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from utils import course

ROOT = Path(__file__).resolve().parent.parent
CLONE_NAME = course.GITHUB_REPO.split("/")[1]  # the folder the setup cell clones into
# Iteration counts that the full-mode and online runs cap (model sizes and batch sizes stay those of their mode):
# the code path is the same, only the loops are short. The plain quick-mode run of unit1/ keeps the real counts.
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
    """The notebook at ``path`` with the cap cell of ``CAPS[path]`` after its settings cell and ``extra_cells`` at
    its end."""
    notebook = read_notebook(ROOT / path)
    insert_after_settings(notebook, cap_cell(CAPS[path], quick), CAPS[path])
    notebook.cells.extend(nbformat.v4.new_code_cell(source) for source in extra_cells)
    return notebook


def run_alone(paths, folder: Path, origin: Path, env: dict, *, quick: bool, extra_cells=None,
              timeout: int = 3600) -> subprocess.CompletedProcess:
    """Run capped copies of the notebooks at ``paths`` under nbval, opened alone in the empty ``folder``.

    Each copy's setup cell clones the course from ``origin`` (a ``snapshot_repository``) through COURSE_REPO_URL,
    as Colab clones it from GitHub; nothing of this checkout is importable (no PYTHONPATH). A second pytest runs
    them because the kernel must start with ``env`` (HF_ENDPOINT, for one, is read when huggingface_hub is
    imported). ``extra_cells`` maps a path to sources of cells to append. Fails unless every cell passes and the
    course was cloned next to the copies.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for path in paths:
        name = Path(path).name
        nbformat.write(capped_notebook(path, quick, (extra_cells or {}).get(path, ())), folder / name)
        names.append(name)
    env = {**env, "COURSE_QUICK": str(int(quick)), "COURSE_REPO_URL": str(origin)}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=1800", "-q",
                             "-p", "no:cacheprovider", "--rootdir", str(folder), *names],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert (folder / CLONE_NAME / "utils" / "__init__.py").is_file() and not (folder / "utils").exists()
    return result


TRAINING_MEMORY = '''
import json as _json

import torch as _torch


def _training_memory(module, *inputs):
    # fp32 weights + gradients + AdamW's two moment buffers, plus the tensors autograd saves for backward
    parameters = sum(p.numel() * p.element_size() for p in module.parameters())
    own = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    was_training = module.training
    module.train()
    with _torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = module(*inputs)
    module.train(was_training)
    del output
    count = sum(p.numel() for p in module.parameters())
    return {"parameters": count, "weights_grads_adamw_bytes": 4 * parameters, "activation_bytes": sum(saved.values()),
            "estimate_bytes": 4 * parameters + sum(saved.values())}


with open({FILE!r}, "w", encoding="utf-8") as _file:
    _json.dump({MEASURE}, _file)
'''


def training_memory_code(measure: str, filename: str) -> str:
    """A cell that writes ``measure`` (a dict expression of _training_memory calls) as JSON to ``filename``."""
    return TRAINING_MEMORY.replace("{MEASURE}", measure).replace("{FILE!r}", repr(filename))
