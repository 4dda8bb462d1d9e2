"""Both notebooks, top to bottom under nbval, online: against the local Hub and logged in with its dummy token.

The offline run of the same notebooks is the plain nbval collection of unit1/ (pyproject.toml's testpaths), with
quick mode's real iteration counts. This run checks the online branches (the pretrained-pipeline demo, Hub data,
the guarded upload), so it keeps quick mode's sizes and caps only the iteration counts (tests/notebook_runs.py).
Each notebook is opened alone in an empty folder, as on Colab, and its setup cell clones a snapshot of this
working tree. A second pytest runs it because HF_ENDPOINT must be set before the kernel imports anything.
"""

import pytest
from notebook_runs import CAPS, run_alone


@pytest.mark.slow
@pytest.mark.online
def test_both_notebooks_run_online_and_upload(hub_env, hub, origin, tmp_path):
    hub.requests.clear()
    result = run_alone(list(CAPS), tmp_path / "alone", origin, hub_env, quick=True)
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
