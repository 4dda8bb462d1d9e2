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
from pathlib import Path

import pytest
from notebook_runs import (
    CAPS,
    ROOT,
    capped_notebook,
    insert_after_settings,
    read_notebook,
    run_alone,
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


@pytest.mark.slow
@pytest.mark.parametrize("path", list(CAPS), ids=lambda p: p.split("/")[1])
def test_notebook_opened_alone_runs_in_full_mode_and_fits_a_t4(path, origin, tmp_path, record_property):
    # Opened the way Colab opens it: the notebook alone in an empty folder; its setup cell clones the course
    # (from a local snapshot of this working tree, through COURSE_REPO_URL) and checks the installed versions.
    alone = tmp_path / "alone"
    run_alone([path], alone, origin, {**os.environ, "HF_HUB_OFFLINE": "1"}, quick=False,
              extra_cells={path: [training_memory_code(MEASURE[path], MEMORY_FILE)]})

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
    notebook = capped_notebook(path, quick=False, extra_cells=["pass"])
    index = [i for i, cell in enumerate(notebook.cells) if "tests/notebook_runs.py" in cell.source]
    assert len(index) == 1 and "if quick:" in notebook.cells[index[0] - 1].source
    assert "assert not quick" in notebook.cells[index[0]].source and notebook.cells[-1].source == "pass"
    assert "assert quick," in capped_notebook(path, quick=True).cells[index[0]].source
    with pytest.raises(ValueError, match="does not set \\['no_such_knob'\\]"):
        insert_after_settings(read_notebook(ROOT / path), "", ["no_such_knob"])
