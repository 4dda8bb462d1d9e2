"""Both notebooks, top to bottom under nbval, online: against the local Hub and logged in with its dummy token.

The offline run of the same notebooks is the plain nbval collection of unit1/ (pyproject.toml's testpaths). This
one starts a second pytest, because HF_ENDPOINT must be in the kernel's environment before it imports anything.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "unit1").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.online
def test_both_notebooks_run_online_and_upload(hub_env, hub):
    hub.requests.clear()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *NOTEBOOKS], env=hub_env,
                            cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:]
    # The online branches ran: the pretrained pipeline, both Hub datasets, the guarded upload.
    downloads = {r.split(" ", 1)[1] for r in hub.requests if r.startswith("GET ")}
    assert "/johnowhitaker/ddpm-butterflies-32px/resolve/main/unet/diffusion_pytorch_model.safetensors" in {
        d.replace(hub.repos[("model", "johnowhitaker/ddpm-butterflies-32px")].sha, "main") for d in downloads}
    assert any("smithsonian_butterflies_subset" in d and d.endswith(".parquet") for d in downloads)
    assert any("ylecun/mnist" in d and d.endswith(".parquet") for d in downloads)
    uploaded = hub.uploads.get("course-learner/ddpm-butterflies-32px", {})
    assert {"README.md", "recipe.json", "model_index.json", "unet/diffusion_pytorch_model.safetensors"} <= set(
        uploaded), sorted(uploaded)
    assert not any(p.endswith(".bin") for p in uploaded)
    for text in (result.stdout, result.stderr, *(data.decode(errors="ignore") for data in uploaded.values())):
        assert hub.token not in text, "the Hub token leaked"
