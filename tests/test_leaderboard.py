"""tools.leaderboard and tools.ranking: recipe.json files -> one row per recipe, ranked by evidence, and a plot."""

import ast
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from tools import hub_entries, leaderboard, ranking
from tools.leaderboard import (
    MISSING,
    OPTIONAL,
    RecipeError,
    label_groups,
    leaderboard_markdown,
    load_recipes,
    main,
    main_idea,
    rgb_markdown,
)
from tools.ranking import rank_recipes, seed_group, training_key
from utils.recipe import RECIPE_FIELDS, recipe_problems

ROOT = Path(__file__).resolve().parent.parent
BASE = "python unit1/train_unconditional.py --dataset_name mnist --max_train_steps 4600"


def write_recipe(folder, **fields):
    """A recipe.json with every schema field (None unless given), as the writers of utils/recipe.py make it."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {**dict.fromkeys(RECIPE_FIELDS), "metrics": {}, **fields}
    (folder / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
    return folder / "recipe.json"


def run(folder, seed, fid, sampler="ddpm", steps=100, digest=None, scale=1.0, command=BASE, **fields):
    """One evaluation of one training run of ``command`` with the given seed, sampler and FID."""
    flags = f" --sampler {sampler} --num_inference_steps {steps} --seed {seed} --output_dir out/{folder.name}"
    return write_recipe(folder, **{
        "dataset": "mnist", "seed": seed, "sampler": sampler, "num_inference_steps": steps,
        "guide_step": 1000 if scale != 1 else None, "guidance_scale": scale, "train_minutes": 14.0,
        "images_seen": 147_200, "device": "cpu (2 threads)", "num_processes": 1, "mixed_precision": "no",
        "model_size": "micro-conv", "num_parameters": 636_465, "command": command + flags,
        "processes": [{"rank": 0, "weights_sha256": digest or f"{folder.name}-weights"}],
        "metrics": {"fid": fid, "fid_floor": 0.2, "coverage": 0.99, "num_samples": 1000}, **fields})


def table_rows(markdown):
    return [line.split(" | ") for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith(("| 順位", "| モデル"))]


@pytest.fixture
def board(tmp_path):
    """Recipe A: three seeds, each also evaluated with a second sampler (same weights); recipe B: two seeds close
    to A; recipe C: one run, far worse; a notebook run without a command or metric."""
    paths = []
    for seed, fid, slow in ((0, 0.56, 0.55), (1, 0.76, 0.87), (2, 0.79, None)):
        paths.append(run(tmp_path / f"a-fast-seed{seed}", seed, fid, "dpm++sde", 25, f"a{seed}", 1.5))
        if slow is not None:
            paths.append(run(tmp_path / f"a-slow-seed{seed}", seed, slow, "ddpm", 250, f"a{seed}", 1.5))
    for seed, fid in ((0, 0.73), (1, 0.74)):
        paths.append(run(tmp_path / f"b-seed{seed}", seed, fid, command=BASE + " --snr_plus_one"))
    paths.append(run(tmp_path / "c", 0, 9.0, command=BASE + " --model_size tiny"))
    paths.append(write_recipe(tmp_path / "notebook", dataset="mnist", metrics={}))
    return paths


def test_seeds_and_identical_weights_make_one_row_with_its_sampler_variants(board):
    rows, spread, dof = rank_recipes(load_recipes(board))
    assert [ranking.entry_name(row.representative) for row in rows] == ["a-fast-seed0", "b-seed0", "c", "notebook"]
    best = rows[0]
    assert best.best.seeds == [0, 1, 2] and best.best.mean == pytest.approx((0.56 + 0.76 + 0.79) / 3)
    (slow,) = best.variants[1:]
    assert slow.seeds == [0, 1] and slow.mean == pytest.approx(0.71)  # the sampler comparison beside the rank
    assert len(best.entries) == 5  # five evaluations, three training runs, one recipe
    logs = [[math.log(v) for v in values] for values in ([0.56, 0.76, 0.79], [0.55, 0.87], [0.73, 0.74])]
    squares = sum(sum((x - sum(ls) / len(ls)) ** 2 for x in ls) for ls in logs)
    assert dof == 4 and spread == pytest.approx(math.sqrt(squares / 4))
    assert best.log_error == pytest.approx(spread / math.sqrt(3))
    assert rows[-1].best is None and rows[-1].rank is None  # not evaluated: listed last, unranked


def test_a_rerun_of_one_seed_is_the_same_run_not_another_seed(board, tmp_path):
    # the same command and seed on another machine: other last bits, so another digest, but not a new seed
    rerun = run(tmp_path / "a-fast-seed0-rerun", 0, 0.60, "dpm++sde", 25, "a0-other-machine", 1.5)
    rows, _, dof = rank_recipes(load_recipes([*board, rerun]))
    best = rows[0].best
    assert best.seeds == [0, 1, 2] and best.values[0] == pytest.approx((0.56 + 0.60) / 2)
    assert dof == 4 and len(rows[0].entries) == 6  # still three seeds of recipe A, two of B


def test_rows_that_cannot_be_told_apart_share_a_rank_and_single_runs_say_so(board):
    rows = table_rows(leaderboard_markdown(load_recipes(board)))
    assert [row[0] for row in rows] == ["| 1 ≈", "| 1 ≈", "| 3", f"| {MISSING}"]  # a and b tie; c is worse
    assert rows[0][3] == "3（0, 1, 2）" and rows[2][3] == "1（0、1 回のみ）"
    assert rows[0][2].startswith("0.703 ± ")
    assert rows[0][8] == "ddpm 250 + AG 1.5 (step 1000): 0.71（2）"
    assert rows[0][7] == "dpm++sde 25 + AG 1.5 (step 1000)"
    assert rows[0][5] == "未検証（重みが Hub にない）"


def test_the_notes_state_the_seed_spread_measured_from_the_table(board):
    text = leaderboard_markdown(load_recipes(board), ROOT / "unit1" / "leaderboard" / "README.md")
    assert "最大 1.58 倍（0.55 と 0.87）" in text  # the largest ratio between two seeds of one variant
    assert "自由度 4" in text and "暗記" in text and "評価枚数" in text
    assert "まだ集めていません" in text and "python -m" not in text
    assert "[README の「図と表を作り直す」](../../README.md#図と表を作り直す)" in text


def test_training_key_drops_seed_output_resume_and_sampling_flags():
    a = {"command": f"{BASE} --guide_step 1000 --guidance_scale 1.5 --guide_interval 100 900 --sampler ddpm "
                    "--seed 1 --output_dir=x --resume_from_checkpoint latest --eval_num_samples 1000"}
    assert training_key(a) == BASE and training_key({"command": None}) is None
    assert seed_group(a) == (f"{BASE} --guide_step 1000 --guidance_scale 1.5 --guide_interval 100 900 --sampler ddpm "
                             "--eval_num_samples 1000")
    assert training_key({"command": "python x.py --note 'unbalanced"}) == "python x.py --note 'unbalanced"


def test_a_verified_entry_ranks_by_its_verified_fid_and_a_disagreement_is_flagged(tmp_path):
    paths = [run(tmp_path / "honest", 0, 1.0, command=BASE + " --a"), run(tmp_path / "boasted", 0, 0.3,
                                                                           command=BASE + " --b")]
    for path, verified in zip(paths, ({"fid": 1.02, "agrees": True}, {"fid": 3.0, "agrees": False})):
        (path.parent / "entry.json").write_text(json.dumps(
            {"repo_id": f"someone/{path.parent.name}", "revision": "abc123", "grid": "samples/final.png",
             "verified": {"revision": "abc123", "fid_std": 0.05, **verified}}))
    loaded = load_recipes(paths)
    assert loaded[0]["_hub"] == {"repo_id": "someone/honest", "revision": "abc123", "grid": "samples/final.png"}
    rows = table_rows(leaderboard_markdown(loaded))
    assert rows[0][1] == "[someone/honest](https://huggingface.co/someone/honest)"
    assert rows[0][5] == "1.02 ✓（自己申告 1）"  # the two numbers side by side
    assert rows[1][5] == "3 ⚠ 不一致（自己申告 0.3）"  # ranked by what its weights actually give


def test_a_hub_entry_that_fails_verification_is_shown_but_not_ranked_on_its_own_number(tmp_path):
    run(tmp_path / "honest", 0, 1.0, command=BASE + " --a")
    hostile = run(tmp_path / "hub" / "mallory--boast", 0, 0.01, sampler="no-such-sampler", command=BASE + " --b")
    (hostile.parent / "entry.json").write_text(json.dumps({"repo_id": "mallory/boast", "revision": "abc123"}))
    loaded = load_recipes([tmp_path])
    logged = []
    assert hub_entries.verify(tmp_path / "hub", loaded, log=logged.append) == 1  # refused before any download
    assert "is not one of the course's" in logged[0]
    rows = table_rows(leaderboard_markdown(load_recipes([tmp_path])))
    assert [(row[0], row[1]) for row in rows] == [("| 1", "honest"), (f"| {MISSING}", "[mallory/boast]"
                                                                      "(https://huggingface.co/mallory/boast)")]
    assert rows[1][2] == MISSING and rows[1][5] == "未検証のため順位なし（自己申告 0.01）"
    summary = table_rows(leaderboard.summary_markdown(load_recipes([tmp_path])))
    assert [row[1] for row in summary] == ["honest"]  # the top five are ranked rows only


def test_rgb_entries_get_their_own_unranked_table(tmp_path):
    butterflies = write_recipe(tmp_path / "butterflies", dataset="huggan/smithsonian_butterflies_subset",
                               model_size="UNet2DModel", num_parameters=18_500_000, device="cuda", train_minutes=30.0,
                               images_seen=30_000, metrics={})
    (butterflies.parent / "entry.json").write_text(json.dumps({"repo_id": "me/ddpm-butterflies-32px",
                                                               "revision": "f00", "grid": "samples.png"}))
    digits = run(tmp_path / "digits", 0, 1.0)
    loaded = load_recipes([butterflies, digits])
    assert len(table_rows(leaderboard_markdown(loaded))) == 1  # not in the MNIST ranking
    (row,) = table_rows(rgb_markdown(loaded))
    assert row[1] == "![サンプル](https://huggingface.co/me/ddpm-butterflies-32px/resolve/f00/samples.png)"
    assert "UNet2DModel (18.50 M)" in row and "なし" in row and "未検証 |" in row
    assert "順位を付けません" in rgb_markdown(loaded)
    assert "まだエントリーはありません" in rgb_markdown(load_recipes([digits]))


def test_command_line_writes_markdown_and_plot(board, tmp_path):
    markdown, plot = tmp_path / "out" / "leaderboard.md", tmp_path / "out" / "leaderboard.png"
    assert main([*(str(p.parent) for p in board), "--markdown", str(markdown), "--plot", str(plot)]) == 0
    text = markdown.read_text(encoding="utf-8")
    assert len(table_rows(text)) == 4 and f"({leaderboard._relative_link(ROOT / 'README.md', markdown)}#" in text
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 600


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a list"),
    (json.dumps({**dict.fromkeys(RECIPE_FIELDS), "metrics": 3}), "'metrics' must be a JSON object"),
    (json.dumps({name: None for name in RECIPE_FIELDS if name != "guidance_scale"} | {"metrics": {}}),
     r"does not follow the recipe schema \(utils/recipe.py\): missing field 'guidance_scale'"),
])
def test_unreadable_recipes_get_clear_messages(tmp_path, content, message):
    path = tmp_path / "recipe.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RecipeError, match=message):
        load_recipes([path])


def test_the_schema_checks_types_so_an_untrusted_recipe_cannot_break_the_table():
    recipe = {**dict.fromkeys(RECIPE_FIELDS), "metrics": {"fid": "0.1", "n": float("inf")}, "versions": {},
              "train_minutes": True, "command": ["rm", "-rf"], "seed": 1.5, "dataset": "x" * 30_000}
    problems = recipe_problems(recipe)
    assert "'train_minutes' must be a finite number or null, not bool true" in problems
    assert any(p.startswith("'command' must be a string or null, not list") for p in problems)
    assert "'seed' must be an integer or null, not float 1.5" in problems
    assert any("30,000 characters" in p for p in problems)
    assert any(p.startswith("metrics['fid'] must be a finite number") for p in problems)
    assert any(p.startswith("metrics['n'] must be a finite number") for p in problems)
    for path in sorted((ROOT / "unit1" / "leaderboard").glob("*/recipe.json")):
        assert recipe_problems(json.loads(path.read_text(encoding="utf-8"))) == [], path.parent.name


def test_plot_without_any_metric_is_an_error_not_an_empty_figure(tmp_path, capsys):
    path = write_recipe(tmp_path / "run", dataset="mnist", metrics={})
    assert main([str(path), "--plot", str(tmp_path / "plot.png")]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    assert not (tmp_path / "plot.png").exists()


def test_a_folder_means_its_run_folders_and_its_collected_hub_entries(board, tmp_path):
    hub = write_recipe(tmp_path / "hub" / "someone--model", dataset="mnist", metrics={})
    (hub.parent / "entry.json").write_text(json.dumps({"repo_id": "someone/model", "revision": "1"}))
    loaded = load_recipes([tmp_path])
    assert len(loaded) == len(board) + 1 and loaded[-1]["_hub"]["repo_id"] == "someone/model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="holds no recipe.json"):
        load_recipes([tmp_path / "empty"])


def test_readme_tables_are_replaced_between_markers_and_checked(board, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Unit\n\n<!-- leaderboard:start -->\nold table\n<!-- leaderboard:end -->\n\nRGB:\n"
                      "<!-- leaderboard-rgb:start -->\nold\n<!-- leaderboard-rgb:end -->\nMore text.\n", encoding="utf-8")
    args = [str(path) for path in board] + ["--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().out and "old table" in readme.read_text(encoding="utf-8")
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Unit\n\n<!-- leaderboard:start -->\n| 順位") and text.endswith("More text.\n")
    assert len(table_rows(text)) == 4 and "old" not in text and "まだエントリーはありません" in text
    assert main([*args, "--check"]) == 0  # --check is not part of the recorded command
    readme.write_text("# No markers\n", encoding="utf-8")
    assert main(args) == 2
    assert "no leaderboard markers" in capsys.readouterr().err


def test_check_cannot_be_combined_with_collecting(board, capsys):
    with pytest.raises(SystemExit):
        main([str(board[0]), "--readme", "x.md", "--check", "--from-hub"])
    assert "cannot be combined" in capsys.readouterr().err


def test_from_hub_offline_is_a_clear_error_that_keeps_the_entries(board, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([str(tmp_path), "--from-hub"]) == 2
    assert "not reachable" in capsys.readouterr().err


def test_plot_labels_of_near_identical_recipes_are_merged_not_overprinted():
    points = [(1.0, 1.0, 1), (1.0, 1.003, 2), (10.0, 1.0, 3), (1.01, 1.002, 4), (1.0, 10.0, 5), (2.0, -0.1, 6)]
    assert label_groups(points) == [(1.0, 1.0, [1, 2, 4]), (10.0, 1.0, [3]), (1.0, 10.0, [5]), (2.0, -0.1, [6])]


def test_summary_shows_the_top_recipes_in_a_short_table_and_is_checked(board, tmp_path, capsys):
    full, unit = tmp_path / "leaderboard" / "README.md", tmp_path / "README.md"
    full.parent.mkdir()
    full.write_text("<!-- leaderboard:start -->\n<!-- leaderboard:end -->\n", encoding="utf-8")
    unit.write_text("# Unit\n<!-- leaderboard-top:start -->\nold\n<!-- leaderboard-top:end -->\nEnd.\n", encoding="utf-8")
    args = [str(path) for path in board] + ["--readme", str(full), "--summary", str(unit), "--top", "2"]
    assert main([*args, "--check"]) == 1
    assert capsys.readouterr().out.count("out of date") == 2
    assert main(args) == 0
    text = unit.read_text(encoding="utf-8")
    rows = table_rows(text)
    assert len(rows) == 2 and rows[0][:2] == ["| 1 ≈", "a-fast-seed0"] and rows[1][3] == "2（0, 1）"
    assert len(rows[0]) == 8 and "`" not in " | ".join(rows[0])
    assert "[leaderboard/README.md](leaderboard/README.md)" in text and text.endswith("<!-- leaderboard-top:end -->\nEnd.\n")
    assert main([*args, "--check"]) == 0
    unit.write_text("# No summary markers\n", encoding="utf-8")
    assert main(args) == 2
    assert "leaderboard-top:start" in capsys.readouterr().err


def test_summary_minutes_of_a_run_slow_per_image_get_a_footnote(board, tmp_path):
    slow = run(tmp_path / "slow-day", 0, 0.5, command=BASE + " --slow", train_minutes=28.0)  # 147,200 images too
    other_model = run(tmp_path / "tiny", 0, 0.6, command=BASE + " --tiny", train_minutes=30.0, model_size="tiny")
    rows = table_rows(leaderboard.summary_markdown(load_recipes([*board, slow, other_model]), top=3))
    assert [row[6] for row in rows] == ["28 ※1", "30", "14"]  # a model alone has nothing to be slow against
    text = leaderboard.summary_markdown(load_recipes([*board, slow]))
    assert "※1 1 分あたりの学習画像数が、同じモデル・同じデバイスの記録の中央値の 1/2.0 でした" in text
    assert "学習画像数（147,200 枚）で比べてください" in text and "※2" not in text


def test_main_idea_is_made_from_the_recipe():
    recipe = dict(model_size="micro-conv", prediction_type="v_prediction", train_batch_size=32, snr_gamma=5.0,
                  snr_plus_one=True, guide_step=1000, guidance_scale=1.5, sampler="ddpm", num_inference_steps=250)
    assert main_idea(recipe) == "micro-conv · v 予測 · バッチ 32 · Min-SNR 5 (+1) · AG 1.5 · ddpm 250"
    assert main_idea({}) == MISSING


# ---------------------------------------------------------------- checks of Hub entries before any download
def test_entry_files_are_checked_before_anything_is_downloaded():
    weights = {"recipe.json": 900, "unet/diffusion_pytorch_model.safetensors": 2_000_000}
    hub_entries.check_files(weights)
    cases = [({"unet/diffusion_pytorch_model.safetensors": 1}, "no recipe.json"),
             ({**weights, "recipe.json": 2 * 1024**3}, "recipe.json is 2.0 GB"),
             ({"recipe.json": 1, "unet/diffusion_pytorch_model.bin": 9}, "pickled weights only"),
             ({"recipe.json": 1}, "no unet/diffusion_pytorch_model.safetensors"),
             ({**weights, "unet/diffusion_pytorch_model.safetensors": 2 * 1024**3}, "more than the 512.0 MB")]
    for files, reason in cases:
        with pytest.raises(hub_entries.EntrySkipped, match=reason):
            hub_entries.check_files(files)
    with pytest.raises(hub_entries.EntrySkipped, match="guide_unet"):
        hub_entries.check_files(weights, guided=True)


def test_verification_uses_the_entrys_own_settings_and_refuses_unknown_ones():
    recipe = {"sampler": "dpm++sde", "num_inference_steps": 25, "guidance_scale": 1.5, "guide_step": 1000,
              "seed": 2, "eval_batch_size": 250, "metrics": {"num_samples": 1000}, "network_evaluations": 50}
    settings = hub_entries.verification_settings(recipe)
    assert settings == {"sampler": "dpm++sde", "num_inference_steps": 25, "guidance_scale": 1.5, "guided": True,
                        "guide_interval": None, "num_samples": 1000, "batch_size": 250, "seed": 2}
    for change, reason in (({"sampler": "__import__('os')"}, "is not one of"),
                           ({"num_inference_steps": 10**9}, "is not 1-1000"),
                           ({"guidance_scale": float("nan")}, "is not a number"),
                           ({"network_evaluations": 10**6}, "more than 2000")):
        with pytest.raises(hub_entries.EntrySkipped, match=reason):
            hub_entries.verification_settings({**recipe, **change})


class RepositoryNotFoundError(Exception):
    """Named like huggingface_hub's: collect() tells a repo that is gone by the error's name."""


def collected_entry(hub_dir, repo_id, revision="r1", verified=None):
    folder = hub_dir / hub_entries.folder_name(repo_id)
    run(folder, 0, 1.0, command=BASE + f" --{folder.name}")
    (folder / "entry.json").write_text(json.dumps({"repo_id": repo_id, "revision": revision, "verified": verified}))
    return folder


def test_a_hub_error_keeps_the_collected_entry_and_a_gone_repo_removes_it(tmp_path, monkeypatch):
    verified = {"revision": "r1", "fid": 1.0, "fid_std": 0.1, "agrees": True}
    flaky = collected_entry(tmp_path, "someone/flaky", verified=verified)
    gone = collected_entry(tmp_path, "someone/gone", verified=verified)
    errors = {"someone/flaky": OSError("503 Server Error: Service Unavailable"),
              "someone/gone": RepositoryNotFoundError("404"), "someone/new": OSError("Read timed out")}

    def fetch(api, info):
        raise errors[info.id]

    monkeypatch.setattr(hub_entries, "fetch_entry", fetch)
    api = SimpleNamespace(list_models=lambda **query: [SimpleNamespace(id=repo) for repo in errors])
    logged = []
    skipped = hub_entries.collect(tmp_path, api=api, log=logged.append)
    assert json.loads((flaky / "entry.json").read_text())["verified"] == verified  # kept, with its verification
    assert not gone.exists() and "removed someone--gone: skipped this time (see above)" in logged
    assert not any("no longer listed" in line for line in logged)
    assert skipped == ["someone/gone: gone or closed since it was listed (RepositoryNotFoundError)",
                       "someone/new: could not be read (OSError: Read timed out)"]
    collection = json.loads((tmp_path / "collection.json").read_text())
    assert collection["entries"] == 1 and collection["stale"][0].startswith("someone/flaky: could not be read")
    assert "うち 1 件は今回読み込めなかったので前回の内容のまま" in leaderboard.collection_note(collection)


def test_only_a_final_verification_failure_is_cached_by_revision(tmp_path, monkeypatch):
    refused = collected_entry(tmp_path, "someone/refused")
    (refused / "recipe.json").write_text((refused / "recipe.json").read_text().replace('"ddpm"', '"no-such"'))
    collected_entry(tmp_path, "someone/unlucky")

    def repo_files(api, repo_id, revision):
        raise OSError("Connection reset by peer")

    monkeypatch.setattr(hub_entries, "repo_files", repo_files)
    logged = []
    assert hub_entries.verify(tmp_path, load_recipes([tmp_path]), api=object(), log=logged.append) == 2
    unlucky = json.loads((tmp_path / "someone--unlucky" / "entry.json").read_text())["verified"]
    assert unlucky["retry"] is True and "Connection reset" in unlucky["note"]
    assert "retry" not in json.loads((refused / "entry.json").read_text())["verified"]
    assert "someone/unlucky: not verified: OSError: Connection reset by peer（次の集計でもう一度試します）" in \
        leaderboard_markdown(load_recipes([tmp_path]))
    logged.clear()  # the next run tries the network failure again, not the refused sampler
    assert hub_entries.verify(tmp_path, load_recipes([tmp_path]), api=object(), log=logged.append) == 1
    assert logged[0].startswith("verified someone/unlucky@")


def test_max_verify_bounds_one_run_and_leaves_the_rest_for_the_next(tmp_path, capsys):
    for name in ("someone/a", "someone/b", "someone/c"):
        folder = collected_entry(tmp_path / "hub", name)
        (folder / "recipe.json").write_text((folder / "recipe.json").read_text().replace('"ddpm"', '"no-such"'))
    logged = []
    assert hub_entries.verify(tmp_path / "hub", load_recipes([tmp_path]), log=logged.append, limit=2) == 2
    assert logged[0] == "verifying 2 of the 3 entries due; the other 1 wait for a later run"
    assert json.loads((tmp_path / "hub" / "someone--c" / "entry.json").read_text())["verified"] is None
    assert hub_entries.verify(tmp_path / "hub", load_recipes([tmp_path]), log=logged.append, limit=2) == 1
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--max-verify", "2"])  # without --verify it would do nothing
    assert "--max-verify needs --verify" in capsys.readouterr().err


# ---------------------------------------------------------------- what the leaderboard reads
def keys_read_from_recipes() -> set[str]:
    """The string keys the leaderboard modules read from a recipe: recipe.get("x"), recipe["x"], e.get("x") ..."""
    keys = set()
    for module in (leaderboard, ranking, hub_entries):
        for node in ast.walk(ast.parse(Path(module.__file__).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                target, key = node.func.value, node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript):
                target, key = node.value, node.slice
            else:
                continue
            if isinstance(target, ast.Name) and target.id in ("recipe", "r", "e", "entry") \
                    and isinstance(key, ast.Constant) and isinstance(key.value, str):
                keys.add(key.value)
    # added by load_recipes, not read from the file; and the keys of a collected entry.json
    return keys - {"_source", "_hub", "_verified", "repo_id", "revision", "grid", "verified"}


def test_the_leaderboard_reads_only_schema_fields_and_its_declared_optional_keys():
    keys = keys_read_from_recipes()
    assert {"command", "dataset", "guide_step", "metrics", "processes"} <= keys  # the scan sees the reads
    assert keys - set(RECIPE_FIELDS) == OPTIONAL, "read a new key? add it to utils/recipe.py (or to OPTIONAL)"
    assert not OPTIONAL & set(RECIPE_FIELDS)


def test_the_command_line_does_not_load_torch(board, tmp_path):
    code = ("import sys\nfrom tools.leaderboard import main\n"
            f"assert main({[str(path) for path in board]!r} + ['--markdown', {str(tmp_path / 'a.md')!r}, "
            f"'--plot', {str(tmp_path / 'a.png')!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.png").is_file()


def test_the_pages_prose_quotes_the_committed_ranking():
    """Numbers in the leaderboard page's analysis come from the committed recipes, so they cannot go stale."""
    rows, _, _ = rank_recipes([r for r in load_recipes([ROOT / "unit1" / "leaderboard"]) if "_hub" not in r])
    prose = (ROOT / "unit1" / "leaderboard" / "README.md").read_text(encoding="utf-8").split("## 表からわかること")[1]
    ratio, low, high = ranking.largest_seed_ratio(rows)
    assert f"最大 {ratio:.2f} 倍違いました（mnist-microconv-v-bs32-snr5-b99-ag-ddpm250-15min の {low:.3f}" in prose
    assert f"の {high:.3f}）" in prose
    top, second = rows[0], rows[1]
    seeds = "・".join(f"{v:.3f}" for v in top.best.values)
    assert f"{seeds} で、**シード平均は {top.best.mean:.3f}（下限比 3.42 倍）**" in prose
    assert f"2 つのシードの平均は {second.best.mean:.3f}" in prose and top.rank == second.rank == 1
    no_guide = next(v for v in top.variants if v.key[2] == 1 and v.key[1] == 100)
    assert f"シード平均 {no_guide.mean:.2f}（シード 0 と 1）" in prose
    assert re.search(r"表でも 2 つは同じ 3 位です", prose) and rows[2].rank == rows[3].rank == 3


def test_text_from_a_recipe_cannot_add_markup_to_the_page(tmp_path):
    path = run(tmp_path / "sneaky", 0, 1.0, command=BASE + " --note '`</td>[x](https://evil.example)`'",
               device="<img src=https://evil.example/p.png>", model_size="![pixel](https://evil.example/p.png)")
    text = leaderboard_markdown(load_recipes([path]))
    assert "!\\[pixel\\](" in text and "![pixel]" not in text  # shown as text, not as an image
    assert "\\<img" in text and text.count("<img") == text.count("\\<img")
    (row,) = table_rows(text)
    assert row[-1].startswith("`python unit1/train_unconditional.py") and row[-1].count("`") == 2


def test_rgb_verification_reads_only_a_hub_dataset_named_by_the_entry(monkeypatch):
    from datasets import Dataset

    from utils import data

    for recipe in ({"dataset": "/home/me/photos"}, {"dataset": "../secrets"}, {"dataset": None},
                   {"dataset": "huggan/smithsonian_butterflies_subset", "dataset_fallback": "OFFLINE FALLBACK"}):
        with pytest.raises(hub_entries.EntrySkipped, match="not a Hub dataset"):
            hub_entries._training_images(recipe, 8, 10)
    images = [Image.new("RGB", (12, 12), (i * 10, 0, 0)) for i in range(20)]
    asked = {}
    monkeypatch.setattr(data, "load_image_dataset", lambda name, max_samples: asked.update(name=name, n=max_samples)
                        or Dataset.from_dict({"image": images}))
    reference = hub_entries._training_images({"dataset": "huggan/smithsonian_butterflies_subset"}, 8, 10)
    assert asked == {"name": "huggan/smithsonian_butterflies_subset", "n": 20} and tuple(reference.shape) == (20, 3, 8, 8)


def test_learner_pages_link_to_the_maintainer_commands_instead_of_carrying_them():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split(f"\n## {leaderboard.MAINTAINER_SECTION}\n")[1].split("\n## ")[0]
    commands = re.findall(r"`(python -m tools\.leaderboard [^`]*)`", section)
    assert any("--from-hub --verify" in c for c in commands) and any("--check" in c for c in commands)
    for command in commands:  # each one parses (a folder argument, known flags)
        leaderboard.parse_args(shlex.split(command)[3:])
    for page in ("unit1/README.md", "unit1/leaderboard/README.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        assert "python -m tools." not in text, f"{page} carries a maintainer command; link to the README instead"
        assert f"README.md#{leaderboard.MAINTAINER_SECTION})" in text, page


def test_the_weekly_workflow_runs_a_bounded_collection_the_tool_accepts():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "leaderboard.yml").read_text(encoding="utf-8"))
    job = workflow["jobs"]["collect"]
    (script,) = [step["run"] for step in job["steps"] if "tools.leaderboard" in step.get("run", "")]
    words = shlex.split(script.replace("\\\n", " ").replace('"$MAX_VERIFY"', str(job["env"]["MAX_VERIFY"])))
    args = leaderboard.parse_args(words[3:])
    assert args.from_hub and args.verify and args.max_verify == job["env"]["MAX_VERIFY"]
