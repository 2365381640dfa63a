"""Every recipe runs in --quick mode and writes assets that gptlib.assets loads."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gptlib import assets
from gptlib.recipes.registry import recipe_assets, recipe_names
from gptlib.recipes.runner import main, run_recipe
from gptlib.settings import SettingsError, read_toml, resolve


def test_list_names_every_recipe_and_its_assets(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in recipe_names():
        assert name in out
        for asset in recipe_assets(name):
            assert asset in out


def test_every_shipped_asset_has_a_recipe():
    made = {a for name in recipe_names() for a in recipe_assets(name)}
    assert set(assets.names()) <= made, set(assets.names()) - made


@pytest.mark.slow
@pytest.mark.parametrize("name", recipe_names())
def test_quick_recipe_writes_loadable_assets(name, tmp_path):
    # in this process: the command line adds only argument parsing, tested once below, and
    # eleven fresh interpreters importing torch cost CI more than the recipes themselves
    run_recipe(name, mode="quick", out=tmp_path)
    written = assets.names(tmp_path)
    assert written == sorted(recipe_assets(name)), (written, recipe_assets(name))
    for asset in written:
        a = assets.load(asset, root=tmp_path)
        assert a.meta["command"] == f"python -m gptlib.recipes {name} --quick"
        assert a.meta["settings"]


@pytest.mark.slow
def test_command_line_runs_a_recipe_and_records_the_rebuild_command(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "gptlib.recipes", "induction", "--quick",
                           "--out", str(tmp_path), "--seed", "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert assets.names(tmp_path) == sorted(recipe_assets("induction"))
    for asset in assets.names(tmp_path):
        meta = assets.load(asset, root=tmp_path).meta
        # --out is where, not what: the command rebuilds the asset wherever it is run
        assert meta["command"] == "python -m gptlib.recipes induction --quick --seed 3"
        assert meta["settings"]["seed"] == 3


@pytest.mark.slow
def test_ppo_runs_extension_recomputes_a_missing_run_identically(tmp_path):
    """``--only rlhf/ppo-runs`` adds missing runs; a run depends only on its own task, so a
    removed run comes back with the very numbers the whole recipe gave it."""
    import json

    run_recipe("ppo", mode="quick", out=tmp_path)
    meta_path = tmp_path / "rlhf" / "ppo-runs" / "meta.json"
    whole = json.loads(meta_path.read_text())
    cut = json.loads(meta_path.read_text())
    removed = cut["history"]["runs"].pop("ppo_ptx_seed0")
    # an asset written before every family had a run per seed names its no-KL run so
    cut["history"]["runs"]["ppo_beta0"] = cut["history"]["runs"].pop("ppo_beta0_seed0")
    meta_path.write_text(json.dumps(cut))
    run_recipe("ppo", mode="quick", out=tmp_path, overrides={"only": "rlhf/ppo-runs"})
    extended = assets.load("rlhf/ppo-runs", root=tmp_path).meta
    assert [e["runs"] for e in extended["metrics"]["extended"]] == [["ppo_ptx_seed0"]]
    assert extended["command"] == whole["command"]  # the whole recipe still rebuilds it
    again = extended["history"]["runs"]["ppo_ptx_seed0"]
    assert again["final"]["per_prompt"] == removed["final"]["per_prompt"]
    assert again["history"] == removed["history"]
    assert extended["metrics"]["summary"] == whole["metrics"]["summary"]
    assert sorted(extended["history"]["runs"]) == sorted(whole["history"]["runs"])


@pytest.mark.slow
def test_codex_extension_adds_temperatures_as_the_whole_recipe_measures_them(tmp_path):
    """``--extend true`` measures on the stored codex/small only the temperatures it lacks;
    the rows it adds are the whole recipe's rows for them, and the rest is kept."""
    two = {"eval.temperatures": [0.8, 1.6], "eval.rank_at": [0.8, 1.6]}
    run_recipe("codex", mode="quick", out=tmp_path / "whole", overrides=two)
    whole = assets.load("codex/small", root=tmp_path / "whole").meta
    run_recipe("codex", mode="quick", out=tmp_path / "grown")  # [0.8] only (the quick table)
    first = assets.load("codex/small", root=tmp_path / "grown").meta
    run_recipe("codex", mode="quick", out=tmp_path / "grown", overrides={**two, "extend": True})
    grown = assets.load("codex/small", root=tmp_path / "grown").meta
    assert [e["temperatures"] for e in grown["metrics"]["extended"]] == [
        {tier: [1.6] for tier in whole["metrics"]["tiers"]}]
    assert grown["command"] == first["command"]  # the whole recipe still rebuilds it
    for tier, rows in whole["metrics"]["tiers"].items():
        assert grown["metrics"]["tiers"][tier] == rows
        assert list(grown["metrics"]["tiers"][tier]) == ["0.8", "1.6"]
    assert grown["metrics"]["body_nll"] == first["metrics"]["body_nll"]
    assert grown["settings"] == whole["settings"]
    with pytest.raises(ValueError, match="run the whole recipe"):
        run_recipe("codex", mode="quick", out=tmp_path / "grown",
                   overrides={**two, "extend": True, "eval.n": 4})


def test_unknown_recipe_and_setting_say_did_you_mean(capsys):
    assert main(["pretrian"]) == 2
    assert "Did you mean 'pretrain'" in capsys.readouterr().err
    assert main(["pretrain", "--quick", "--onyl", "x"]) == 2
    assert "Did you mean 'only'" in capsys.readouterr().err
    with pytest.raises(SettingsError, match="unknown table 'modelz'.*Did you mean 'models'"):
        run_recipe("pretrain", mode="quick", overrides={"modelz.x": 1})


def test_quick_and_full_tables_override_defaults():
    raw = read_toml(os.path.join(os.path.dirname(assets.__file__), "configs", "pretrain.toml"))
    default, quick, full = resolve(raw), resolve(raw, "quick"), resolve(raw, "full")
    name = "gpt2/tasks-large"
    assert default["models"][name]["max_iters"] == 1200
    assert quick["models"][name]["max_iters"] < 10
    assert full["models"][name]["model"]["n_embd"] > default["models"][name]["model"]["n_embd"]
    # the defaults are untouched by resolving a mode
    assert resolve(raw)["models"][name] == default["models"][name]


def test_missing_settings_file_is_one_line(tmp_path):
    with pytest.raises(SettingsError, match=r"^settings file '.*nope.toml' does not exist\.$"):
        read_toml(tmp_path / "nope.toml")
    proc = subprocess.run([sys.executable, "-m", "gptlib.train", str(tmp_path / "missing.toml")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [f"error: settings file '{tmp_path / 'missing.toml'}' does not exist."]
