"""Both notebooks, top to bottom under nbval, online: against the local Hub and logged in with its dummy token.

The offline run of the same notebooks is the plain nbval collection of unit1/ (pyproject.toml's testpaths), with
quick mode's real iteration counts. This run checks the online branches (the pretrained-pipeline demo, Hub data,
the guarded upload), so it keeps quick mode's sizes and caps only the iteration counts (tests/notebook_runs.py).
Each notebook is opened alone in an empty folder, as on Colab, and its setup cell clones a snapshot of this
working tree. A second pytest runs it because HF_ENDPOINT must be set before the kernel imports anything.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_runs import CAPS, insert_after_settings, read_notebook, snapshot_repository

ROOT = Path(__file__).resolve().parent.parent


def cap_cell(caps: dict) -> str:
    lines = ["# tests/test_notebooks_online.py が挿入したセル: クイックモードの大きさのまま、くり返しの回数だけを減らします",
             'assert quick, "this copy must run the quick-mode settings (COURSE_QUICK=1)"']
    return "\n".join([*lines, *(f"{name} = {value!r}" for name, value in caps.items())])


@pytest.mark.slow
@pytest.mark.online
def test_both_notebooks_run_online_and_upload(hub_env, hub, tmp_path):
    origin = snapshot_repository(tmp_path / "origin")
    alone = tmp_path / "alone"
    alone.mkdir()
    for path, caps in CAPS.items():
        notebook = read_notebook(ROOT / path)
        insert_after_settings(notebook, cap_cell(caps), caps)
        nbformat.write(notebook, alone / Path(path).name)
    hub.requests.clear()
    env = {**hub_env, "COURSE_REPO_URL": str(origin)}
    env.pop("PYTHONPATH")
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=900", "-q",
                             "-p", "no:cacheprovider", "--rootdir", str(alone), *sorted(p.name for p in
                                                                                       alone.glob("*.ipynb"))],
                            cwd=alone, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # The online branches ran: the pretrained pipeline, both Hub datasets, the guarded upload.
    downloads = {r.split(" ", 1)[1] for r in hub.requests if r.startswith("GET ")}
    assert any(d.startswith("/johnowhitaker/ddpm-butterflies-32px/resolve/")
               and d.endswith("unet/diffusion_pytorch_model.safetensors") for d in downloads), sorted(downloads)
    assert any("smithsonian_butterflies_subset" in d and d.endswith(".parquet") for d in downloads)
    assert any("ylecun/mnist" in d and d.endswith(".parquet") for d in downloads)
    uploaded = hub.uploads.get("course-learner/ddpm-butterflies-32px", {})
    assert {"README.md", "recipe.json", "model_index.json", "unet/diffusion_pytorch_model.safetensors"} <= set(
        uploaded), sorted(uploaded)
    assert not any(p.endswith(".bin") for p in uploaded)
    for text in (result.stdout, result.stderr, *(data.decode(errors="ignore") for data in uploaded.values())):
        assert hub.token not in text, "the Hub token leaked"
