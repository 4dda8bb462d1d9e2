"""Full mode proven on the CPU: each notebook runs with its full-mode settings (model widths, data sizes, schedules,
the training script's full-mode arguments) and only its iteration counts capped, so every full-mode code path
executes in CI. The committed notebooks are not edited: a copy gets one cell after its settings cell.
Each copy is opened alone in an empty folder, as Colab and Kaggle open a notebook, and run under nbval: its
setup cell clones the course from a local snapshot of this working tree (COURSE_REPO_URL).

It also estimates each full-mode model's GPU memory for training (fp32 weights + gradients + AdamW states +
the activations autograd saves, measured here at the full batch size) and checks that it fits a 16 GB T4.
Run alone with ``python -m pytest tests/test_full_mode.py -s`` to see the sizes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from notebook_runs import (
    CAPS,
    CLONE_NAME,
    ROOT,
    insert_after_settings,
    read_notebook,
    snapshot_repository,
    training_memory_code,
)

T4_USABLE_BYTES = 15 * 2**30  # a "16 GB" T4 shows about 15 GiB to CUDA
CUDA_CONTEXT_BYTES = 2**30  # context, cuDNN workspaces, allocator slack: a generous margin
MEMORY_FILE = "full_mode_memory.json"

MEASURE = {
    "unit1/01_introduction_to_diffusers.ipynb": (
        '{"UNet2DModel (notebook loop; the script\'s --model_size small is the same)": _training_memory(model, '
        "_torch.randn(batch_size, 3, image_size, image_size, device=device), "
        "_torch.randint(0, 1000, (batch_size,), device=device)), \"batch_size\": batch_size}"),
    "unit1/02_diffusion_models_from_scratch.ipynb": (
        '{"BasicUNet": _training_memory(basic_net, _torch.rand(batch_size, 1, 28, 28, device=device)), '
        '"UNet2DModel (DDPM)": _training_memory(ddpm_unet, _torch.randn(batch_size, 1, 28, 28, device=device), '
        "_torch.randint(0, 1000, (batch_size,), device=device)), \"batch_size\": batch_size}"),
}


def cap_cell(caps: dict) -> str:
    lines = ["# tests/test_full_mode.py が挿入したセル: フルモードの設定のまま、繰り返しの回数だけを減らします",
             'assert not quick, "this copy must run the full-mode settings (COURSE_QUICK=0)"']
    return "\n".join([*lines, *(f"{name} = {value!r}" for name, value in caps.items())])


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    return snapshot_repository(tmp_path_factory.mktemp("origin"))


@pytest.mark.slow
@pytest.mark.parametrize("path", list(CAPS), ids=lambda p: p.split("/")[1])
def test_notebook_opened_alone_runs_in_full_mode_and_fits_a_t4(path, origin, tmp_path, record_property):
    # Opened the way Colab opens it: the notebook alone in an empty folder; its setup cell clones the course
    # (from a local snapshot of this working tree, through COURSE_REPO_URL) and checks the installed versions.
    notebook = read_notebook(ROOT / path)
    insert_after_settings(notebook, cap_cell(CAPS[path]), CAPS[path])
    notebook.cells.append(nbformat.v4.new_code_cell(training_memory_code(MEASURE[path], MEMORY_FILE)))
    alone = tmp_path / "alone"
    alone.mkdir()
    copy = alone / Path(path).name
    nbformat.write(notebook, copy)
    env = {**os.environ, "COURSE_QUICK": "0", "HF_HUB_OFFLINE": "1", "COURSE_REPO_URL": str(origin)}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-cell-timeout=1800", "-q",
                             "-p", "no:cacheprovider", "--rootdir", str(alone), copy.name],
                            cwd=alone, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert (alone / CLONE_NAME / "utils" / "__init__.py").is_file() and not (alone / "utils").exists()

    memory = json.loads((alone / MEMORY_FILE).read_text(encoding="utf-8"))
    batch_size = memory.pop("batch_size")
    for model, numbers in memory.items():
        gib = numbers["estimate_bytes"] / 2**30
        line = (f"{Path(path).name}: {model}: {numbers['parameters'] / 1e6:.2f} M parameters, batch {batch_size}, "
                f"weights+grads+AdamW {numbers['weights_grads_adamw_bytes'] / 2**20:.0f} MiB + activations "
                f"{numbers['activation_bytes'] / 2**20:.0f} MiB = {gib:.2f} GiB (fp32)")
        print(line)
        record_property(model, line)
        assert numbers["parameters"] > 0 and numbers["activation_bytes"] > 0
        assert numbers["estimate_bytes"] + CUDA_CONTEXT_BYTES < T4_USABLE_BYTES, line


@pytest.mark.parametrize("path", list(CAPS), ids=lambda p: p.split("/")[1])
def test_every_capped_name_is_a_setting_of_the_notebook(path):
    notebook = read_notebook(ROOT / path)
    index = insert_after_settings(notebook, cap_cell(CAPS[path]), CAPS[path])
    assert "if quick:" in notebook.cells[index - 1].source and "assert not quick" in notebook.cells[index].source
    with pytest.raises(ValueError, match="does not set \\['no_such_knob'\\]"):
        insert_after_settings(read_notebook(ROOT / path), "", ["no_such_knob"])
