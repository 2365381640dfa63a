"""gptlib.assets: every shipped asset loads; missing, stale and misfit assets name their fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gptlib import assets
from gptlib.model import GPT, GPTConfig
from gptlib.paths import ASSETS
from gptlib.tokenizer import CharTokenizer

MAX_ASSET_BYTES = 5 * 1024 * 1024


def tiny_gpt(n_embd: int = 16) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=5, block_size=8, n_layer=1, n_head=2, n_embd=n_embd))


def save_tiny(root: Path, name: str = "demo/tiny", **kwargs) -> GPT:
    model = tiny_gpt(**kwargs)
    assets.save(name, command="python -m gptlib.recipes demo", settings={"steps": 3},
                metrics={"loss": 1.5}, history=[{"iter": 0, "loss": 2.0}], wall_s=0.1,
                model=model, builder="gptlib.model:GPT.from_config",
                model_config=model.config.__dict__, tokenizer=CharTokenizer("abcde"), root=root)
    return model


def test_round_trip(tmp_path):
    model = save_tiny(tmp_path)
    a = assets.load("demo/tiny", root=tmp_path)
    x = torch.tensor([[0, 1, 2, 3]])
    assert torch.equal(a.model(x), model.eval()(x))
    assert not a.model.training
    assert a.tokenizer.symbols == list("abcde")
    assert a.metrics == {"loss": 1.5} and a.history == [{"iter": 0, "loss": 2.0}]
    assert set(assets.META_KEYS) <= set(a.meta)
    assert a.meta["torch"] == torch.__version__
    assert assets.names(tmp_path) == ["demo/tiny"]


def test_tied_weights_stay_tied_and_half_precision_loads_as_float(tmp_path):
    model = tiny_gpt()
    assets.save("demo/half", command="c", settings={}, metrics={}, wall_s=0, model=model,
                builder="gptlib.model:GPT.from_config", model_config=model.config.__dict__,
                root=tmp_path, half=True)
    a = assets.load("demo/half", root=tmp_path)
    assert a.model.lm_head.weight is a.model.wte.weight
    assert a.model.lm_head.weight.dtype == torch.float32
    torch.testing.assert_close(a.model.lm_head.weight, model.lm_head.weight, atol=1e-3, rtol=1e-3)


def test_missing_asset_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(assets.AssetError, match="missing.*python -m gptlib.recipes pretrain"):
        assets.load("gpt2/tasks-small", root=tmp_path)
    with pytest.raises(assets.AssetError, match="no recipe makes 'nope/x'"):
        assets.load("nope/x", root=tmp_path)


def test_stale_format_names_the_command(tmp_path):
    save_tiny(tmp_path)
    meta_path = tmp_path / "demo/tiny/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format"] = "gptlib-asset-v0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(assets.AssetError, match="stale.*python -m gptlib.recipes demo"):
        assets.load("demo/tiny", root=tmp_path)


def test_weights_that_do_not_fit_name_the_command(tmp_path):
    save_tiny(tmp_path)
    meta_path = tmp_path / "demo/tiny/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["config"]["n_embd"] = 32  # the code now builds a wider model
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(assets.AssetError, match="(?s)does not fit.*shape.*remake it with: python -m gptlib.recipes demo"):
        assets.load("demo/tiny", root=tmp_path)


def test_an_interrupted_save_keeps_the_old_asset(tmp_path, monkeypatch):
    save_tiny(tmp_path)
    before = (tmp_path / "demo/tiny/model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(assets, "_json_default", crash)
    with pytest.raises((KeyboardInterrupt, TypeError)):
        assets.save("demo/tiny", command="c", settings={"bad": object()}, metrics={}, wall_s=0,
                    root=tmp_path)
    assert (tmp_path / "demo/tiny/model.safetensors").read_bytes() == before
    assert assets.load("demo/tiny", root=tmp_path).metrics == {"loss": 1.5}
    assert not [p for p in (tmp_path / "demo").iterdir() if p.name.startswith(".tmp")]


def test_builder_must_be_a_gptlib_callable(tmp_path):
    save_tiny(tmp_path)
    meta_path = tmp_path / "demo/tiny/meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["builder"] = "os:system"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(assets.AssetError, match="gptlib"):
        assets.load("demo/tiny", root=tmp_path)


# ---- the shipped assets -------------------------------------------------------------------

SHIPPED = assets.names()


def test_every_asset_folder_is_in_the_new_format():
    # a folder with weights or JSON but no meta.json is an asset in an old format
    for path in ASSETS.rglob("*"):
        if path.is_file() and path.suffix in (".safetensors", ".json") and "screenshots" not in path.parts:
            folder = path.parent
            while folder != ASSETS and not (folder / "meta.json").exists():
                folder = folder.parent
            assert folder != ASSETS, f"{path.relative_to(ASSETS)} belongs to no asset (no meta.json)"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_asset_loads(name):
    a = assets.load(name)
    assert a.meta["name"] == name
    assert a.meta["command"].startswith("python -m gptlib.recipes "), a.meta["command"]
    assert isinstance(a.meta["metrics"], dict) and a.meta["wall_s"] >= 0
    size = sum(p.stat().st_size for p in a.path.rglob("*") if p.is_file())
    assert size <= MAX_ASSET_BYTES, f"{name} is {size / 1e6:.1f} MB"
    if a.model is not None:
        assert not a.model.training
        n = sum(p.numel() for p in a.model.parameters())
        assert n > 0


def test_shipped_assets_exist():
    assert {"gpt1/shakespeare", "gpt2/tasks-small", "gpt2/tasks-medium", "gpt2/tasks-large"} <= set(SHIPPED)


def test_assets_within_the_repository_budget():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024, f"assets/ holds {total / 1e6:.1f} MB (budget 30 MB)"
