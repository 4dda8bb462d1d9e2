"""The course's online code paths, run for real against the local Hub (tests/hub_server.py).

Each client runs in a fresh Python process: HF_ENDPOINT is read when huggingface_hub is imported.
"""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from utils.environment import hub_address, is_online

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.online
SCRIPT = ROOT / "unit1" / "train_unconditional.py"


def run_python(code: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter; a hang fails the test instead of blocking the suite."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def assert_no_token(hub, *texts: str):
    for text in texts:
        assert hub.token not in text, "the Hub token leaked into the output"
    for repo, files in hub.uploads.items():
        for path, data in files.items():
            assert hub.token.encode() not in data, f"the Hub token leaked into {repo}/{path}"


# ---------------------------------------------------------------- online detection
def test_hub_address_follows_the_endpoint():
    assert hub_address({}) == ("huggingface.co", 443)
    assert hub_address({"HF_ENDPOINT": "http://127.0.0.1:8123"}) == ("127.0.0.1", 8123)
    assert hub_address({"HF_ENDPOINT": "http://localhost"}) == ("localhost", 80)
    assert hub_address({"HF_ENDPOINT": "https://hf-mirror.example/"}) == ("hf-mirror.example", 443)
    with pytest.raises(ValueError, match="invalid port"):
        hub_address({"HF_ENDPOINT": "http://127.0.0.1:99999"})


def test_is_online_probes_the_endpoint_port_and_parses_offline_like_huggingface_hub(hub):
    env = {"HF_ENDPOINT": hub.endpoint}
    assert is_online(environ=env)
    assert is_online(environ={**env, "HF_HUB_OFFLINE": "0"})  # 0 means online, as in huggingface_hub
    assert is_online(environ={**env, "HF_HUB_OFFLINE": "false"})
    assert not is_online(environ={**env, "HF_HUB_OFFLINE": "1"})
    assert not is_online(environ={**env, "HF_DATASETS_OFFLINE": "yes"})
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not is_online(environ={"HF_ENDPOINT": f"http://127.0.0.1:{port}"})


# ---------------------------------------------------------------- downloads
@pytest.mark.slow
def test_hub_datasets_load_with_their_real_columns(hub_env):
    result = run_python("""
        from utils.data import BUTTERFLIES, MNIST, is_fallback, load_image_dataset
        butterflies = load_image_dataset(BUTTERFLIES, max_samples=8)
        assert not is_fallback(butterflies) and len(butterflies) == 8
        assert {"image", "scientific_name", "image_hash"} <= set(butterflies.column_names)
        digits = load_image_dataset(MNIST, split="test")
        assert not is_fallback(digits) and digits.column_names == ["image", "label"]
        assert digits[0]["image"].size == (28, 28) and len(digits) == 1000
        print("OK")
    """, hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "（Hub 上の名前は ylecun/mnist）" in result.stdout  # mnist is served under its new id, as on the Hub


@pytest.mark.slow
def test_unknown_datasets_get_the_hubs_not_found_answer(hub_env):
    result = run_python("""
        from utils.data import DataError, load_image_dataset
        for name in ("nobody/no-such-dataset", "no-such-dataset"):
            try:
                load_image_dataset(name)
            except DataError as error:
                print("DataError:", error)
            else:
                raise AssertionError(name)
    """, hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("was not found on the Hugging Face Hub") == 2, result.stdout


@pytest.mark.slow
def test_pretrained_pipeline_downloads_as_safetensors(hub_env, hub):
    result = run_python("""
        import torch
        from diffusers import DDPMPipeline
        pipeline = DDPMPipeline.from_pretrained("johnowhitaker/ddpm-butterflies-32px")
        assert pipeline.unet.config.sample_size == 32 and pipeline.scheduler.config.num_train_timesteps == 1000
        images = pipeline(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
        print(images[0].size)
    """, hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(32, 32)" in result.stdout
    assert any(r.endswith("unet/diffusion_pytorch_model.safetensors") and r.startswith("GET") for r in hub.requests)


# ---------------------------------------------------------------- uploads
PUSH = """
    import json, sys
    from pathlib import Path
    from safetensors.torch import save_file
    import torch
    from utils.hub import push_folder, write_model_card
    folder = Path(sys.argv[-1] if len(sys.argv) > 1 else "{folder}")
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    save_file({{"w": torch.ones(3)}}, folder / "unet" / "diffusion_pytorch_model.safetensors")
    recipe = {{"dataset": "mnist", "learning_rate": 1e-3}}
    (folder / "recipe.json").write_text(json.dumps(recipe))
    write_model_card(folder, recipe, metrics={{"fid": 1.0}}, repo_id="course-learner/pushed")
    print("RESULT", push_folder(folder, "pushed"))
"""


@pytest.mark.slow
def test_push_folder_uploads_card_recipe_and_safetensors_without_the_token(hub_env, hub, tmp_path):
    result = run_python(PUSH.format(folder=tmp_path / "run"), hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"RESULT {hub.endpoint}/course-learner/pushed" in result.stdout  # the URL follows HF_ENDPOINT
    files = hub.uploads["course-learner/pushed"]
    assert {"README.md", "recipe.json", "unet/diffusion_pytorch_model.safetensors"} <= set(files)
    assert b"license: apache-2.0" in files["README.md"]
    assert_no_token(hub, result.stdout, result.stderr)


@pytest.mark.slow
def test_push_folder_without_a_login_skips_with_a_message(hub_env, tmp_path):
    env = {k: v for k, v in hub_env.items() if k != "HF_TOKEN"}
    result = run_python(PUSH.format(folder=tmp_path / "run"), env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ログインしていないため" in result.stdout and "RESULT None" in result.stdout


@pytest.mark.slow
def test_push_folder_with_a_rejected_token_keeps_the_folder(hub_env, hub, tmp_path):
    result = run_python(PUSH.format(folder=tmp_path / "run"), {**hub_env, "HF_TOKEN": "hf_wrong_token"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "アップロードに失敗しました" in result.stdout and "RESULT None" in result.stdout
    assert (tmp_path / "run" / "recipe.json").exists() and "Traceback" not in result.stdout + result.stderr
    assert "hf_wrong_token" not in result.stdout + result.stderr


# ---------------------------------------------------------------- a broken Hub
class RemoteProtocolError(Exception):
    """Named like httpx's error for a download cut off mid-body."""


class DatasetNotFoundError(Exception):
    """Named like the error 🤗 datasets raises when the Hub has no such dataset."""


class ServerError(Exception):
    def __init__(self, status_code: int):
        super().__init__(f"{status_code} Server Error")
        self.response = type("Response", (), {"status_code": status_code})()


def raise_in_load_dataset(monkeypatch, make_error):
    import datasets

    from utils import data

    def load_dataset(*args, **kwargs):
        raise make_error()

    monkeypatch.setattr(data, "is_online", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def cause(error: Exception, by: Exception) -> Exception:
    error.__cause__ = by
    return error


@pytest.mark.parametrize("make_error", [
    lambda: RemoteProtocolError("peer closed connection without sending complete message body"),
    lambda: cause(RuntimeError("download failed"), ServerError(503)),
    lambda: cause(ServerError(502), FileNotFoundError("data/train-00000-of-00001.parquet")),  # a 5xx wins
], ids=["cut-off", "5xx", "5xx-over-not-found"])
def test_a_failing_hub_falls_back_in_process(monkeypatch, capsys, make_error):
    # The decision of the subprocess tests below, fast: a Hub that fails (not one that says "no such dataset")
    # gives the labelled offline digits.
    from utils.data import is_fallback, load_image_dataset

    raise_in_load_dataset(monkeypatch, make_error)
    digits = load_image_dataset("ylecun/mnist", split="test", max_samples=10)
    assert is_fallback(digits) and len(digits) == 10
    assert "Hub から読み込めなかったため" in capsys.readouterr().out


@pytest.mark.parametrize("make_error", [
    lambda: DatasetNotFoundError("Dataset 'nobody/no-such-dataset' doesn't exist on the Hub"),
    lambda: cause(RuntimeError("resolve failed"), FileNotFoundError("nobody/no-such-dataset")),
], ids=["not-found", "chained-not-found"])
def test_a_dataset_the_hub_does_not_have_is_an_error_in_process(monkeypatch, make_error):
    from utils.data import DataError, load_image_dataset

    raise_in_load_dataset(monkeypatch, make_error)
    with pytest.raises(DataError, match="was not found on the Hugging Face Hub"):
        load_image_dataset("ylecun/mnist", split="test")


# A Hub that answers 500 is covered by test_script_reports_a_failed_push_and_keeps_the_run (data, then upload).
@pytest.mark.slow
@pytest.mark.parametrize("failure, timeout", [("truncate", 3), ("slow", 1)])  # "slow": every request times out
def test_a_broken_hub_falls_back_to_the_offline_data(hub_env, hub, failure, timeout):
    hub.failure, hub.slow_seconds = failure, 15
    env = {**hub_env, "HF_HUB_ETAG_TIMEOUT": str(timeout), "HF_HUB_DOWNLOAD_TIMEOUT": str(timeout)}
    result = run_python("""
        from utils.data import MNIST, is_fallback, load_image_dataset
        digits = load_image_dataset("ylecun/mnist", split="test")
        assert is_fallback(digits), "a broken Hub must give the labelled offline digits"
        print("FALLBACK", len(digits))
    """, env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Hub から読み込めなかったため" in result.stdout and "FALLBACK 1000" in result.stdout


@pytest.mark.slow
def test_a_broken_hub_stops_the_upload_with_a_message(hub_env, hub, tmp_path):
    hub.failure = "error"
    result = run_python(PUSH.format(folder=tmp_path / "run"), hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "アップロードに失敗しました" in result.stdout and "RESULT None" in result.stdout
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- the training script online
@pytest.mark.slow
def test_script_trains_on_hub_data_and_pushes_its_run(hub_env, hub, tmp_path):
    out = tmp_path / "butterflies-run"
    args = ["--dataset_name", "huggan/smithsonian_butterflies_subset", "--resolution", "16", "--model_size", "tiny",
            "--train_batch_size", "4", "--max_train_steps", "2", "--num_inference_steps", "2",
            "--eval_batch_size", "2", "--lr_warmup_steps", "0", "--logger", "none", "--checkpointing_steps", "1", "--output_dir", str(out),
            "--push_to_hub", "--hub_model_id", "script-run"]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=hub_env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["dataset"] == "huggan/smithsonian_butterflies_subset" and recipe["dataset_fallback"] is None
    files = hub.uploads["course-learner/script-run"]
    assert {"README.md", "recipe.json", "model_index.json", "unet/diffusion_pytorch_model.safetensors",
            "samples/final.png"} <= set(files)
    assert not any(p.startswith(("checkpoint-", "logs/")) or p.endswith(".bin") for p in files), sorted(files)
    assert_no_token(hub, result.stdout, result.stderr, *(p.read_text(errors="ignore")
                                                         for p in out.rglob("*") if p.is_file()))


@pytest.mark.slow
def test_script_stops_on_a_configuration_the_hub_dataset_lacks(hub_env, tmp_path):
    """datasets' "BuilderConfig 'nope' not found" is a settings mistake: exit 2 and one line naming the option and
    the configurations the Hub offers, before training and without falling back to the offline digits."""
    out = tmp_path / "run"
    args = ["--dataset_name", "mnist", "--dataset_config_name", "nope", "--resolution", "8", "--model_size", "micro",
            "--max_train_steps", "1", "--logger", "none", "--output_dir", str(out)]
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=hub_env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == ("error: Dataset 'mnist' has no configuration 'nope'; its configurations are ['mnist']. "
                             "Pass one of them as config_name (--dataset_config_name in the script), or leave it "
                             "out.\n"), result.stderr[-3000:]
    assert "代替データ" not in result.stdout and not (out / "recipe.json").exists()


@pytest.mark.slow
def test_script_reports_a_failed_push_and_keeps_the_run(hub_env, hub, tmp_path):
    out = tmp_path / "run"
    args = ["--dataset_name", "mnist", "--resolution", "16", "--model_size", "tiny", "--train_batch_size", "4",
            "--max_train_steps", "1", "--num_inference_steps", "2", "--eval_batch_size", "2", "--logger", "none",
            "--output_dir", str(out), "--push_to_hub"]
    hub.failure = "error"  # the whole Hub fails: the data falls back, then the upload fails at the end
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=hub_env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Hub から読み込めなかったため" in result.stdout, result.stdout[-3000:]  # a 500 gives the offline digits
    assert json.loads((out / "recipe.json").read_text())["dataset_fallback"]
    assert "the upload failed" in result.stderr and f"hf upload run {out}" in result.stderr
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert "Traceback" not in result.stderr


NOTEBOOK_CELLS = """
    import json, sys
    from pathlib import Path
    import torch
    from diffusers import DDPMPipeline
    from utils import image_strip, is_logged_in, upscale
    cells = {{c["id"]: "".join(c["source"]) for c in json.loads(Path("unit1/01_introduction_to_diffusers.ipynb")
                                                              .read_text(encoding="utf-8"))["cells"]}}
    pipeline_dir = Path("{folder}")
    pipeline_dir.mkdir(parents=True, exist_ok=True)
    (pipeline_dir / "recipe.json").write_text("{{}}")
    namespace = dict(torch=torch, DDPMPipeline=DDPMPipeline, image_strip=image_strip, upscale=upscale, display=print,
                     is_logged_in=is_logged_in, device=torch.device("cpu"), online=True, seed=0, pretrained_steps=2,
                     pipeline_dir=pipeline_dir)
    for cell_id in ("3637ad67", "497b43e0", "d3a9b6c7"):  # the pretrained-pipeline demo, the upload, the reload
        exec(cells[cell_id], namespace)
    print("PIPELINE", namespace["butterfly_pipeline"])
"""


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["error", "truncate"])
def test_notebook_01_hub_cells_survive_a_broken_hub(hub_env, hub, tmp_path, failure):
    """The demo and upload cells of notebook 01, as committed, skip with a message when the Hub fails."""
    hub.failure = failure
    result = run_python(NOTEBOOK_CELLS.format(folder=tmp_path / "pipeline"), {**hub_env, "HF_HUB_ETAG_TIMEOUT": "3",
                                                                              "HF_HUB_DOWNLOAD_TIMEOUT": "3"}, 240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "学習済みパイプラインを読み込めなかったため" in result.stdout and "PIPELINE None" in result.stdout
    if failure == "error":
        assert "Hub へのアップロードに失敗しました" in result.stdout
        assert "Hub からの読み込みはスキップします" in result.stdout  # nothing uploaded, nothing to reload
    else:  # uploads still work, downloads break: the reload says so and the notebook goes on
        assert "Hub からの読み込みに失敗しました" in result.stdout
