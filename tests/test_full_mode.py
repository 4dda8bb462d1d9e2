"""Full mode proven on the CPU: each notebook runs with its full-mode settings (model widths, data sizes, schedules,
the training script's full-mode arguments) and only its iteration counts capped, so every full-mode code path
executes in CI. The committed notebooks are not edited: a copy gets one cell after its settings cell.

It also estimates each full-mode model's GPU memory for training (fp32 weights + gradients + AdamW states +
the activations autograd saves, measured here at the full batch size) and checks that it fits a 16 GB T4.
Run alone with ``python -m pytest tests/test_full_mode.py -s`` to see the sizes.
"""

import os

import nbclient
import nbformat
import pytest
from notebook_runs import (
    CLONE_NAME,
    ROOT,
    insert_after_settings,
    printed_json,
    read_notebook,
    snapshot_repository,
    training_memory_code,
)

T4_USABLE_BYTES = 15 * 2**30  # a "16 GB" T4 shows about 15 GiB to CUDA
CUDA_CONTEXT_BYTES = 2**30  # context, cuDNN workspaces, allocator slack: a generous margin

CAPS = {
    "unit1/01_introduction_to_diffusers.ipynb": {
        "num_epochs": 1, "sample_steps": 2, "ddim_steps": 2, "pretrained_steps": 2,
        "script_epochs": 1, "script_max_steps": 3, "script_checkpointing_steps": 2,
    },
    "unit1/02_diffusion_models_from_scratch.ipynb": {
        # 40 steps: the notebook compares the mean loss of the first and the last 20 steps
        "naive_train_steps": 40, "ddpm_train_steps": 40, "ddpm_sampling_steps": 4, "fast_sampling_steps": 2,
    },
}
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
def test_notebook_runs_in_full_mode_and_fits_a_t4(path, origin, tmp_path, monkeypatch, record_property):
    notebook = read_notebook(ROOT / path)
    insert_after_settings(notebook, cap_cell(CAPS[path]), CAPS[path])
    notebook.cells.append(nbformat.v4.new_code_cell(training_memory_code(MEASURE[path])))
    for name, value in {"COURSE_QUICK": "0", "HF_HUB_OFFLINE": "1", "COURSE_REPO_URL": str(origin)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    # a single notebook in an empty folder, as Colab opens it: the setup cell clones the course
    client = nbclient.NotebookClient(notebook, timeout=1800, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert (tmp_path / CLONE_NAME / "utils").is_dir()

    memory = printed_json(notebook, "FULL_MODE_MEMORY")
    batch_size = memory.pop("batch_size")
    for model, numbers in memory.items():
        gib = numbers["estimate_bytes"] / 2**30
        line = (f"{os.path.basename(path)}: {model}: {numbers['parameters'] / 1e6:.2f} M parameters, batch {batch_size}, "
                f"weights+grads+AdamW {numbers['weights_grads_adamw_bytes'] / 2**20:.0f} MiB + activations "
                f"{numbers['activation_bytes'] / 2**20:.0f} MiB = {gib:.2f} GiB (fp32)")
        print(line)
        record_property(model, line)
        assert numbers["parameters"] > 0 and numbers["activation_bytes"] > 0
        assert numbers["estimate_bytes"] + CUDA_CONTEXT_BYTES < T4_USABLE_BYTES, line
