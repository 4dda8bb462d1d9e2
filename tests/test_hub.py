import json

import pytest
from huggingface_hub import ModelCard

from utils import hub, repo_root


@pytest.fixture
def tiny_pipeline():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4)
    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10))


def test_model_card_has_metadata_recipe_and_usage(tmp_path):
    recipe = {"dataset": "mnist", "learning_rate": 1e-3, "hub_token": "hf_secret"}
    path = hub.write_model_card(tmp_path, recipe, metrics={"fid": 12.5}, repo_id="me/model",
                                sample_image="samples.png")
    text = path.read_text()
    data = ModelCard.load(path).data  # the metadata as the Hub reads it
    assert data.library_name == "diffusers" and data.license == hub.LICENSE
    assert "unconditional-image-generation" in data.tags
    (result,) = data.eval_results
    assert (result.task_type, result.dataset_name, result.metric_type, result.metric_value) == (
        "unconditional-image-generation", "mnist", "fid", 12.5)
    assert data.model_name == "me/model"
    assert "DDPMPipeline.from_pretrained('me/model')" in text
    assert "| learning_rate | `0.001` |" in text and "![samples](samples.png)" in text
    assert "hf_secret" not in text
    block = text.split("```json\n")[1].split("```")[0]
    assert json.loads(block) == {"dataset": "mnist", "learning_rate": 1e-3}


@pytest.mark.slow
def test_model_card_usage_code_runs_with_and_without_autoguidance(tmp_path, tiny_pipeline, one_thread):
    """Every python block of the card runs against the saved folder (a local path stands in for the repo id)."""
    from diffusers import DDPMScheduler

    from utils.checkpoints import save_pipeline_atomically

    tiny_pipeline.scheduler = DDPMScheduler()  # pipeline() samples 1000 steps, as a learner's would
    folder = tmp_path / "model"
    folder.mkdir()
    save_pipeline_atomically(tiny_pipeline, folder, guide=tiny_pipeline.unet)
    def python_blocks(recipe):
        text = hub.write_model_card(folder, recipe, repo_id=str(folder)).read_text()
        return [part.split("```")[0] for part in text.split("```python\n")[1:]]

    plain, guided = python_blocks({}), python_blocks({"guide_step": 3, "guidance_scale": 1.5, "num_inference_steps": 4})
    assert len(plain) == 1 and guided[0] == plain[0] and len(guided) == 2
    assert "weak + 1.5 * (unet(model_input, t).sample - weak)" in guided[1] and "DDPMScheduler.from_config" in guided[1]
    namespace = {}
    exec("\n".join(guided), namespace)
    assert namespace["image"].size == (8, 8)
    images = namespace["images"]
    assert images.shape == (16, 1, 8, 8) and 0 <= images.min() and images.max() <= 1

    # the card samples as the metrics did: the recipe's sampler, and guidance only inside its interval
    fast = python_blocks({"guide_step": 3, "guidance_scale": 1.5, "num_inference_steps": 4, "sampler": "dpm++",
                          "guide_interval": [0, 500]})
    assert "DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config, timestep_spacing=\"trailing\", " \
           "algorithm_type='dpmsolver++', solver_order=2)" in fast[1] and "if 0 <= t <= 500:" in fast[1]
    namespace = {"pipeline": namespace["pipeline"]}
    exec(fast[1], namespace)
    assert namespace["images"].shape == (16, 1, 8, 8)


def test_push_is_skipped_offline_without_exception(tmp_path, capsys):
    assert hub.push_folder(tmp_path, "me/model") is None
    assert "スキップ" in capsys.readouterr().out


def test_push_is_skipped_when_not_logged_in(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hub, "is_online", lambda: True)
    monkeypatch.setattr(hub, "hub_token", lambda: None)
    assert hub.push_folder(tmp_path, "me/model") is None
    out = capsys.readouterr().out
    assert "ログインしていない" in out and "hf auth login" in out


def test_a_card_without_metrics_has_no_model_index(tmp_path):
    data = ModelCard.load(hub.write_model_card(tmp_path, {"dataset": "mnist"}, repo_id="me/model")).data
    assert data.eval_results is None and data.license == hub.LICENSE
    assert "model-index" not in data.to_dict()


def test_the_card_license_is_the_repository_license():
    license_text = (repo_root() / "LICENSE").read_text(encoding="utf-8")
    assert hub.LICENSE == "apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text


def test_full_repo_name_asks_the_hub_only_for_a_bare_name(monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "whoami", lambda: calls.append("whoami") or {"name": "learner"})
    assert hub.full_repo_name("me/model") == "me/model" and calls == []
    assert hub.full_repo_name("model") == "learner/model" and calls == ["whoami"]
