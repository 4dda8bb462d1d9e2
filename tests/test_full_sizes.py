"""Full mode's models, built outside the notebooks at their real sizes: one training step each, and the memory
their training needs at the full batch size, which must fit a 16 GB T4 (Colab's and Kaggle's GPU).

The settings come from each notebook's settings cell run with ``quick = False`` and the models from the
notebook's own definitions (tests/notebook_runs.py: mode_settings, notebook_objects), so a wider model in the
notebook is a wider model here. The full-mode notebook run (tests/test_notebooks.py) trains the same models at
quick mode's batch size; this module covers the full batch. The estimate: fp32 weights + gradients + AdamW's
two moment buffers, plus the activations autograd saves for backward, measured on the CPU with
``torch.autograd.graph.saved_tensors_hooks`` at the full batch size. ``python -m pytest tests/test_full_sizes.py
-s`` prints the table of README.md's "フルモードの大きさと GPU メモリ".
"""

import pytest
import torch
from diffusers import UNet2DModel
from notebook_runs import mode_settings, notebook_objects
from torch import nn

NB01, NB02 = "unit1/01_introduction_to_diffusers.ipynb", "unit1/02_diffusion_models_from_scratch.ipynb"
T4_USABLE_BYTES = 15 * 2**30  # a "16 GB" T4 shows about 15 GiB to CUDA
CUDA_CONTEXT_BYTES = 2**30  # context, cuDNN workspaces, allocator slack: a generous margin


def training_memory(module: nn.Module, *inputs) -> dict:
    """Bytes that training ``module`` on ``inputs`` needs: fp32 weights, gradients and AdamW's two moment
    buffers, plus the tensors autograd saves for backward (each storage counted once, the weights not again)."""
    parameters = sum(p.numel() * p.element_size() for p in module.parameters())
    own = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = module(*inputs)
    del output
    return {"parameters": sum(p.numel() for p in module.parameters()), "weights_grads_adamw_bytes": 4 * parameters,
            "activation_bytes": sum(saved.values()), "estimate_bytes": 4 * parameters + sum(saved.values())}


def full_size_models(path: str):
    """(name, model, input shape, takes a timestep) for each model the notebook trains in full mode."""
    settings = mode_settings(path, quick=False)
    namespace = {**settings, "torch": torch, "nn": nn, "UNet2DModel": UNet2DModel, "device": torch.device("cpu")}
    if path == NB01:
        model = notebook_objects(path, ["model"], namespace)["model"]
        size = settings["image_size"]
        return settings, [("UNet2DModel (notebook loop; the script's --model_size small is the same)", model,
                           (3, size, size), True)]
    objects = notebook_objects(path, ["BasicUNet", "make_unet"], namespace)
    return settings, [("BasicUNet", objects["BasicUNet"](channels=settings["basic_channels"]), (1, 28, 28), False),
                      ("UNet2DModel (DDPM)", objects["make_unet"](), (1, 28, 28), True)]


def model_inputs(batch: int, shape, timestep: bool):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=generator)
    return (x, torch.randint(0, 1000, (batch,), generator=generator)) if timestep else (x,)


def run(model, inputs):
    output = model(*inputs)
    return output.sample if hasattr(output, "sample") else output


@pytest.mark.slow  # seconds: a forward pass at the full batch size
@pytest.mark.parametrize("path", [NB01, NB02], ids=lambda p: p.split("/")[1])
def test_full_mode_models_train_one_step_and_fit_a_t4(path, record_property):
    settings, models = full_size_models(path)
    batch_size = settings["batch_size"]
    for name, model, shape, timestep in models:
        inputs = model_inputs(2, shape, timestep)
        output = run(model, inputs)
        assert output.shape == inputs[0].shape
        output.square().mean().backward()  # one forward and backward pass at the full width
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), name
        model.zero_grad(set_to_none=True)

        numbers = training_memory(model, *model_inputs(batch_size, shape, timestep))
        gib = numbers["estimate_bytes"] / 2**30
        line = (f"{path.split('/')[1]}: {name}: {numbers['parameters'] / 1e6:.2f} M parameters, batch {batch_size}, "
                f"weights+grads+AdamW {numbers['weights_grads_adamw_bytes'] / 2**20:.0f} MiB + activations "
                f"{numbers['activation_bytes'] / 2**20:.0f} MiB = {gib:.2f} GiB (fp32)")
        print(line)
        record_property(name, line)
        assert numbers["parameters"] > 0 and numbers["activation_bytes"] > 0
        assert numbers["estimate_bytes"] + CUDA_CONTEXT_BYTES < T4_USABLE_BYTES, line


def test_the_settings_and_the_models_come_from_the_notebooks():
    assert mode_settings(NB02, quick=False)["num_train_images"] is None
    assert mode_settings(NB02, quick=True)["batch_size"] == 16
    with pytest.raises(ValueError, match="no longer defines \\['no_such_model'\\]"):
        notebook_objects(NB02, ["make_unet", "no_such_model"], {})
