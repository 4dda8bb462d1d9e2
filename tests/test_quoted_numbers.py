"""Numbers that the learner pages quote from committed files (recipe.json, samplers.json) match those files.

Each check rebuilds a phrase of the prose from the committed records and asserts that the page contains it, so a
recipe or a benchmark that is rerun (or a sentence that is edited by hand) cannot leave a stale number behind.
"""

import importlib.util
import json
import re
import shlex
from pathlib import Path
from statistics import mean

import numpy as np
import pytest

from utils.course import BRANCH, GITHUB_REPO

ROOT = Path(__file__).resolve().parent.parent
LEADERBOARD = ROOT / "unit1" / "leaderboard"
TOP = "mnist-microconv-v-bs32-snr5-b99-ag-dpmsde25-15min"  # the top recipe (by seed mean), seed 0


def recipe(name: str) -> dict:
    return json.loads((LEADERBOARD / name / "recipe.json").read_text(encoding="utf-8"))


def fid(name: str) -> float:
    return recipe(name)["metrics"]["fid"]


def g3(value: float) -> str:
    return f"{value:.3g}"


def g2(value: float) -> str:
    return f"{value:.2g}"


def page(path: str) -> str:
    """A markdown page, or a notebook's markdown cells joined."""
    text = (ROOT / path).read_text(encoding="utf-8")
    if path.endswith(".ipynb"):
        cells = json.loads(text)["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return text


def samplers() -> list[dict]:
    return json.loads((ROOT / "unit1" / "images" / "samplers.json").read_text(encoding="utf-8"))["rows"]


def sampler_row(sampler: str, steps: int, interval=None) -> dict:
    (row,) = [r for r in samplers() if (r["sampler"], r["steps"], r["interval"]) == (sampler, steps, interval)]
    return row


def seed_phrases() -> dict[str, str]:
    """The seed means and their seeds, as the pages write them."""
    top = [fid(TOP), fid(f"{TOP}-seed1"), fid(f"{TOP}-seed2")]
    ddpm250 = [fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min"),
               fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min-seed1")]
    unguided = [fid("mnist-microconv-v-bs32-snr5-b99-15min"), fid("mnist-microconv-v-bs32-snr5-b99-15min-seed1")]
    plus_one = [fid("mnist-microconv-v-bs32-snr5p1-b99-ag-15min"), fid("mnist-microconv-v-bs32-snr5p1-b99-ag-15min-seed1")]
    return {
        "top": f"{'・'.join(map(g3, top))}、平均 {g3(mean(top))}",
        "ddpm250": f"平均 {g3(mean(ddpm250))}（{'・'.join(map(g3, ddpm250))}）",
        "unguided": f"平均 {g3(mean(unguided))}（{'・'.join(map(g3, unguided))}）",
        "plus_one": f"平均 {g3(mean(plus_one))}（{'・'.join(map(g3, plus_one))}）",
        "spread": f"最大 {max(ddpm250) / min(ddpm250):.3g} 倍（{g3(min(ddpm250))} と {g3(max(ddpm250))}）",
    }


def guidance_gain() -> str:
    """Autoguidance on two seeds: seed 0 at DDPM 100 steps, seed 1 (guided at DDPM 250)."""
    seed0 = (fid("mnist-microconv-v-bs32-snr5-b99-15min"), fid("mnist-microconv-v-bs32-snr5-b99-ag-15min"))
    seed1 = (fid("mnist-microconv-v-bs32-snr5-b99-15min-seed1"),
             fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min-seed1"))
    return f"{g3(seed0[0])} → {g2(seed0[1])}、{g3(seed1[0])} → {g2(seed1[1])}"


def min_snr_gain() -> str:
    return f"{g3(fid('mnist-micro-v-bs32-15min'))} → {g3(fid('mnist-micro-v-bs32-snr5-15min'))}"


def test_the_unit_page_quotes_the_seed_means_and_the_gains_of_the_committed_recipes():
    text = page("unit1/README.md")
    for name, phrase in seed_phrases().items():
        assert phrase in text, (name, phrase)
    assert guidance_gain() in text and min_snr_gain() in text


def test_the_unit_pages_example_is_the_top_recipes_seed_0_with_its_recorded_numbers():
    text = page("unit1/README.md")
    top = recipe(TOP)
    same_training = recipe("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min")  # identical weights, another day
    metrics = top["metrics"]
    assert f"leaderboard/{TOP}/samples/final.png" in text
    assert (f"{top['optimizer_steps']:,} ステップ（{top['images_seen']:,} 枚）の学習で FID {g3(metrics['fid'])}、"
            f"coverage {g3(metrics['coverage'])}") in text
    assert f"学習時間 {top['train_minutes']:.1f} 分" in text and f"{same_training['train_minutes']:.1f} 分でした" in text
    assert f"約 {top['train_minutes'] / same_training['train_minutes']:.1f} 倍遅かった" in text


def test_the_first_screen_of_the_unit_page_opens_notebook_01_in_colab():
    first_screen = "\n".join(page("unit1/README.md").splitlines()[:15])
    links = re.findall(r"https://colab\.research\.google\.com/github/([^)\s]+)", first_screen)
    notebook = "unit1/01_introduction_to_diffusers.ipynb"
    assert f"{GITHUB_REPO}/blob/{BRANCH}/{notebook}" in links and (ROOT / notebook).is_file()


COLAB_LAUNCH = '!cd "{COURSE_ROOT}" && accelerate launch unit1/train_unconditional.py '
COMMAND_PAGES = ("unit1/README.md", "unit1/TRAINING.md", "unit1/leaderboard/README.md",
                 "unit1/01_introduction_to_diffusers.ipynb")


def test_the_colab_commands_run_from_the_course_folder_and_are_complete():
    """A notebook cell's working folder on Colab is /content, and the setup cell clones the course into
    /content/<repository name> (COURSE_ROOT) without changing folder: a command that names unit1/... has to move there
    first. The commands are written out in full: the MNIST one is the top recipe's command with the learner's own
    output folder and --push_to_hub, the butterfly one is TRAINING.md's one-GPU command with the upload flags."""
    from tools import sync_course

    setup = sync_course.setup_cell_source()
    folder = GITHUB_REPO.split("/")[1]
    assert f'COURSE_ROOT = Path.cwd() / "{folder}"' in setup and "os.chdir" not in setup
    top = shlex.split(recipe(TOP)["command"])
    assert top[:2] == ["python", "unit1/train_unconditional.py"]
    mnist = top[2:top.index("--output_dir") + 1] + ["outputs/my-mnist-recipe", "--push_to_hub"]
    assert "--resume_from_checkpoint" not in mnist
    one_gpu = re.search(r"### GPU 1 枚で\n\n```bash\n(python unit1/train_unconditional.py .*?)\n```",
                        page("unit1/TRAINING.md"), re.S).group(1)
    butterflies = shlex.split(one_gpu.replace("\\\n", " "))[2:] + ["--push_to_hub", "--hub_model_id", "my-butterflies-64"]
    found = 0
    for path in COMMAND_PAGES:
        text = page(path)
        assert not re.search(r"!(accelerate launch|python) unit1/", text), f"{path}: a Colab command without cd"
        for line in re.findall(r"^ *(!cd .*)$", text, re.M):
            assert line.startswith(COLAB_LAUNCH) and "..." not in line and "…" not in line, (path, line)
            args = shlex.split(line[len(COLAB_LAUNCH):])
            assert args == (mnist if "--dataset_name" in args else butterflies), (path, line)
            found += 1
        if "/content/" in text:
            assert f"/content/{folder}）" in text and "/content/" not in text.replace(f"/content/{folder}）", ""), path
    assert found == 4  # unit1/README, TRAINING (butterflies), the leaderboard page and notebook 01


def test_training_md_quotes_the_recipes_and_the_sampler_comparison():
    text = page("unit1/TRAINING.md")
    seed0, seed1 = guidance_gain().split("、")
    assert f"DDPM 100 ステップの評価で {seed0}、seed 1 は {seed1}" in text
    assert min_snr_gain() in text
    seeds = f"{g3(fid('mnist-microconv-v-bs32-snr5-b99-15min'))} と {g3(fid('mnist-microconv-v-bs32-snr5-b99-15min-seed1'))}"
    assert f"シードを変えただけの差 {seeds}" in text
    sde, ddpm250 = sampler_row("dpm++sde", 25), sampler_row("ddpm", 250)
    assert f"この 50 回の設定の FID（{g3(sde['fid'])}）が 500 回の DDPM（{g3(ddpm250['fid'])}）" in text
    assert sde["evaluations"] == 50 and ddpm250["evaluations"] == 500
    assert f"決定的な DPM-Solver++ 2M の 25 ステップでは {g3(sampler_row('dpm++', 25)['fid'])}" in text
    interval = sampler_row("dpm++sde", 25, [0.0, 500.0])
    assert f"50 回から {interval['evaluations']} 回に減りましたが、FID は {g3(interval['fid'])} に悪化" in text
    steps = (f"（{g3(fid('mnist-microconv-v-bs32-snr5-b99-15min'))} と "
             f"{g3(fid('mnist-microconv-v-bs32-snr5-b99-ddpm250-15min'))}）でしたが、autoguidance（強さ 1.5）を使うと "
             f"100 ステップで {g3(fid('mnist-microconv-v-bs32-snr5-b99-ag-15min'))}、250 ステップで "
             f"{g3(fid('mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min'))}")
    assert steps in text


def test_notebook_02_quotes_the_batch_records_the_sampler_comparison_and_the_guidance_gain():
    text = page("unit1/02_diffusion_models_from_scratch.ipynb")
    batch = [recipe(name) for name in ("mnist-micro-v-bs16-9min", "mnist-microconv-v-bs16-snr5-11min",
                                       "mnist-micro-v-bs32-15min", "mnist-microconv-v-bs32-snr5-b99-15min")]
    assert [r["train_batch_size"] for r in batch] == [16, 16, 32, 32]
    minutes = [f"{r['train_minutes']:.1f} 分・{r['images_seen']:,} 枚" for r in batch]
    assert f"{minutes[0]}と {minutes[1]}。バッチ 32 は {minutes[2]}と {minutes[3]}" in text
    sde, ddpm250, dpm2m = sampler_row("dpm++sde", 25), sampler_row("ddpm", 250), sampler_row("dpm++", 25)
    assert f"FID は {g3(sde['fid'])} で、DDPM の 250 ステップ（500 回）の {g3(ddpm250['fid'])}" in text
    assert f"DPM-Solver++ 2M は {g3(dpm2m['fid'])}" in text
    deterministic = [r["fid"] for r in samplers() if r["sampler"] in ("dpm++", "ddim") and r["evaluations"] == 50]
    assert min(deterministic) / sde["fid"] >= 1.4  # "4 割以上大きく"
    seed0, seed1 = guidance_gain().split("、")
    assert f"seed 0 は {seed0}、seed 1 は {seed1}" in text


def test_the_linear_schedule_threshold_both_notebooks_quote():
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float32).astype(np.float64)  # diffusers' "linear" betas
    signal = np.sqrt(np.cumprod(1 - betas))
    assert signal[600] < 0.16 < signal[590]
    for notebook in ("unit1/01_introduction_to_diffusers.ipynb", "unit1/02_diffusion_models_from_scratch.ipynb"):
        assert "600 を過ぎると" in page(notebook) and "0.16 を下回" in page(notebook), notebook


def leaderboard_section(heading: str) -> str:
    """One '## ' section of the leaderboard page (the hand-written analysis under the generated tables)."""
    text = page("unit1/leaderboard/README.md")
    return text.split(f"## {heading}\n")[1].split("\n## ")[0]


def test_the_leaderboard_analysis_quotes_the_committed_recipes():
    """The bullets of '表からわかること' that tests/test_leaderboard.py does not already tie to the ranking."""
    text = leaderboard_section("表からわかること")
    records = {path.parent.name: json.loads(path.read_text(encoding="utf-8"))
               for path in LEADERBOARD.glob("*/recipe.json")}
    # the two 3-minute recipes differ only in the prediction target
    eps, v = recipe("mnist-micro-eps-3min"), recipe("mnist-micro-v-3min")
    assert f"FID は {eps['metrics']['fid']:.0f}、coverage は {g2(eps['metrics']['coverage'])}" in text
    assert f"同じ {v['optimizer_steps']} ステップで FID {g3(v['metrics']['fid'])}" in text
    assert f"差が {eps['metrics']['fid'] / v['metrics']['fid']:.0f} 倍" in text
    naive = recipe("naive-baseline")
    assert f"{naive['train_minutes']:.1f} 分で FID {g3(naive['metrics']['fid'])}" in text
    unguided_ddpm = [r["metrics"]["fid"] for name, r in records.items() if r["sampler"] == "ddpm"
                     and r["guidance_scale"] == 1.0 and r["train_minutes"] <= 15]
    assert f"ガイドなしの 15 分以内の DDPM（FID {g2(min(unguided_ddpm))}〜{g2(max(unguided_ddpm))}）" in text
    # batch sizes
    bs64, bs32 = recipe("mnist-micro-v-15min"), recipe("mnist-micro-v-bs32-15min")
    assert (bs64["train_batch_size"], bs32["train_batch_size"]) == (64, 32)
    assert f"（バッチ 64、FID {g3(bs64['metrics']['fid'])}）" in text and f"（バッチ 32、FID {g3(fid('mnist-micro-v-bs32-15min'))}）" in text
    bs16 = [recipe("mnist-micro-v-bs16-9min")["images_seen"], recipe("mnist-microconv-v-bs16-snr5-11min")["images_seen"]]
    bs32_seen = [r["images_seen"] for r in records.values()
                 if r["train_batch_size"] == 32 and r["model_size"] in ("micro", "micro-conv")]
    assert f"学習画像数が {bs16[0]:,} 枚と {bs16[1]:,} 枚で、バッチ 32 の micro と micro-conv のレシピ（{min(bs32_seen):,}〜{max(bs32_seen):,} 枚）" in text
    # Min-SNR, autoguidance and the evaluation steps
    assert f"FID は {min_snr_gain().replace(' → ', ' から ')} に下がりました" in text
    assert f"（たとえば {g3(fid('mnist-microconv-v-bs32-snr5-b99-15min'))} と {g3(fid('mnist-microconv-v-bs32-snr5-b99-15min-seed1'))}）" in text
    guided = fid("mnist-microconv-v-bs32-snr5-b99-ag-15min")
    ddpm250 = [fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min"), fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min-seed1")]
    unguided = mean([fid("mnist-microconv-v-bs32-snr5-b99-15min"), fid("mnist-microconv-v-bs32-snr5-b99-15min-seed1")])
    assert f"autoguidance を使うとシード 0 で {g3(guided)}、DDPM 250 ステップでシード 0 と 1 の平均 {g3(mean(ddpm250))}" in text
    assert f"約 {unguided / mean(ddpm250):.1f} 倍の差" in text
    assert (f"DDPM 250 ステップで FID {g3(fid('mnist-microconv-v-bs32-snr5-b99-ddpm250-15min'))}、100 ステップで "
            f"{g3(fid('mnist-microconv-v-bs32-snr5-b99-15min'))}") in text
    assert f"100 ステップで {g3(guided)}、250 ステップで {g3(ddpm250[0])}" in text
    # --snr_plus_one: its coverage lies inside the spread of the original formula's guided records
    plus_one = [recipe("mnist-microconv-v-bs32-snr5p1-b99-ag-15min"), recipe("mnist-microconv-v-bs32-snr5p1-b99-ag-15min-seed1")]
    original = [r["metrics"]["coverage"] for name, r in records.items()
                if name.startswith("mnist-microconv-v-bs32-snr5-b99-ag")]
    assert len(original) == 6
    covered = [r["metrics"]["coverage"] for r in plus_one]
    assert f"coverage）は {g3(covered[0])} と {g3(covered[1])}" in text
    assert f"元の式の {len(original)} つの記録（シードと評価のサンプラー違い）も {g3(min(original))}〜{g3(max(original))}" in text
    assert all(round(c, 3) <= round(max(original), 3) + 0.001 for c in covered)  # "割合が変わったとは言えません"
    assert f"（シード 0 で {g3(guided)}）と区別できず" in text
    # model size on the CPU
    micro, tiny = recipe("mnist-micro-v-bs32-15min"), recipe("mnist-tiny-v-bs32-15min")
    assert f"`micro`（{micro['num_parameters'] / 1e4:.0f} 万パラメータ）から `tiny`（{tiny['num_parameters'] / 1e4:.0f} 万）" in text
    assert f"{tiny['train_minutes']:.1f} 分で見られた画像は半分以下（{tiny['images_seen']:,} 枚）" in text
    assert tiny["images_seen"] < micro["images_seen"] / 2
    assert f"FID は {g3(micro['metrics']['fid'])} から {g3(tiny['metrics']['fid'])} に悪化" in text
    # the goal (floor ratio 3) and the top recipe's seeds
    seed0, seed1 = (recipe("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min"),
                    recipe("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min-seed1"))
    ratio = [r["metrics"]["fid"] / r["metrics"]["fid_floor"] for r in (seed0, seed1)]
    assert (f"{seed0['train_minutes']:.1f} 分の学習で FID {g3(seed0['metrics']['fid'])}（下限比 {ratio[0]:.2f} 倍" in text)
    assert f"シード 1 は {g3(seed1['metrics']['fid'])}（{ratio[1]:.2f} 倍）" in text
    top = [recipe(TOP), recipe(f"{TOP}-seed1"), recipe(f"{TOP}-seed2")]
    minutes = [r["train_minutes"] for r in top]
    assert f"学習時間が {min(minutes):.0f}〜{max(minutes):.0f} 分" in text
    assert {r["optimizer_steps"] for r in top} == {4600} and {r["images_seen"] for r in top} == {147_200}
    assert "（同じ 4,600 ステップ、147,200 枚）" in text


def test_the_leaderboard_sampler_comparison_quotes_samplers_json():
    text = leaderboard_section("サンプラーの比較")
    saved = json.loads((ROOT / "unit1" / "images" / "samplers.json").read_text(encoding="utf-8"))
    assert "mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min" in saved["command"] and "--guidance_scale 1.5" in saved["command"]
    assert {r["num_samples"] for r in saved["rows"]} == {1000}
    sde, ddpm250 = sampler_row("dpm++sde", 25), sampler_row("ddpm", 250)
    assert (sde["evaluations"], ddpm250["evaluations"]) == (50, 500)
    assert f"ほぼ同じ FID**（{g3(sde['fid'])} と {g3(ddpm250['fid'])}）" in text
    assert round(ddpm250["seconds_per_image"] / sde["seconds_per_image"]) == 9  # "約 10 分の 1"
    top = [fid(TOP), fid(f"{TOP}-seed1"), fid(f"{TOP}-seed2")]
    ddpm250_seeds = [fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min"),
                     fid("mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min-seed1")]
    assert abs(top[0] - sde["fid"]) < 1e-3  # the leaderboard's seed 0 is the same weights and setting
    assert f"シード 1 では逆に {g3(top[1])} と {g3(ddpm250_seeds[1])}" in text
    assert f"シード平均でも {g3(mean(top))}（3 シード）と {g3(mean(ddpm250_seeds))}（2 シード）" in text
    assert (f"DPM-Solver++（2M）は {g3(sampler_row('dpm++', 25)['fid'])}、DDIM は {g3(sampler_row('ddim', 25)['fid'])}"
            in text)
    assert "0.812" not in text and "0.632" not in page("unit1/leaderboard/README.md")  # measured once, never recorded
    assert (f"DPM-Solver++ SDE（{g3(sde['fid'])}）、Euler ancestral（{g3(sampler_row('euler-a', 25)['fid'])}）、"
            f"DDPM 25 ステップ（{g3(sampler_row('ddpm', 25)['fid'])}）の順") in text
    s15, s10 = sampler_row("dpm++sde", 15), sampler_row("dpm++sde", 10)
    assert (f"15 ステップ（{s15['evaluations']} 回）で {g3(s15['fid'])}、10 ステップ（{s10['evaluations']} 回）で "
            f"{g3(s10['fid'])}") in text
    interval = sampler_row("dpm++sde", 25, [0.0, 500.0])
    assert (f"ガイドを使うのが {interval['evaluations'] - 25} ステップになりネットワーク評価回数は "
            f"{interval['evaluations']} 回に減りますが、FID は {g3(interval['fid'])}") in text
    assert f"生成に失敗**しました（FID {sampler_row('heun', 13)['fid']:.0f}）" in text


@pytest.fixture(scope="module")
def samplers_benchmark():
    spec = importlib.util.spec_from_file_location("samplers_benchmark", ROOT / "benchmarks" / "samplers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samplers_md_is_the_table_that_samplers_json_gives(samplers_benchmark):
    saved = json.loads((ROOT / "unit1" / "images" / "samplers.json").read_text(encoding="utf-8"))
    args = samplers_benchmark.parse_args(shlex.split(saved["command"])[2:])
    made = samplers_benchmark.markdown_table(saved["rows"], args, saved["command"]).splitlines()
    committed = (ROOT / "unit1" / "images" / "samplers.md").read_text(encoding="utf-8").splitlines()
    # every line but the one naming this machine's torch thread count, which --replot does not record
    thread_line = "PyTorch のスレッド数"
    assert [line for line in made if thread_line not in line] == [line for line in committed if thread_line not in line]


def test_the_readme_quotes_the_gpu_run_from_its_results_file():
    """The full-mode figures of the root README come from benchmarks/results/full_mode_h200.md: each notebook's
    minutes (its section heading) and the peak CUDA memory of the throughput table's two variants."""
    results = page("benchmarks/results/full_mode_h200.md")
    minutes = re.findall(r"^## unit1/0[12]_\S+ — (\d+\.\d) min", results, re.M)
    peaks = sorted(int(row.split("|")[-2]) for row in re.findall(r"^\| (?:plain|script) \|.*\|$", results, re.M))
    assert len(minutes) == 2 and len(peaks) == 2
    readme = page("README.md")
    assert f"ノートブック 01 は全セルが {minutes[0]} 分、ノートブック 02 はセル 39 までが {minutes[1]} 分" in readme
    assert f"メモリの最大値は {peaks[0]}〜{peaks[1]} MiB" in readme
    assert "benchmarks/results/full_mode_h200.md" in readme
