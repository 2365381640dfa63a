"""gptlib.checkpoint: round trips, tied weights, clear errors, and crash safety."""
from __future__ import annotations

import json
import os

import pytest
import torch

import gptlib.checkpoint as ckpt
from gptlib.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from gptlib.model import GPT, GPTConfig

# Tiny models: one thread each (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    kw = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig.gpt2(**{**kw, **overrides}))


def trained_pair(seed: int = 0) -> tuple[GPT, torch.optim.Optimizer]:
    """A model and an AdamW that has taken two steps (so it has moments and a step count)."""
    model = tiny_gpt(seed)
    opt = model.configure_optimizer(weight_decay=0.1, lr=1e-2, betas=(0.9, 0.95))
    x = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(seed))
    for _ in range(2):
        model(x).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_checkpoint_round_trip_with_optimizer_and_tied_weights(tmp_path):
    model, opt = trained_pair()
    meta = {"iter": 7, "history": [{"iter": 1, "train_loss": 3.5}], "note": "hello"}
    save_checkpoint(tmp_path / "ckpt", model, opt, meta)
    tensors, sidecar = checkpoint_paths(tmp_path / "ckpt")
    assert tensors.exists() and sidecar.exists()
    assert not list(tmp_path.glob("*.tmp"))
    # The tied matrix is stored once, the second name recorded as an alias.
    assert json.loads(sidecar.read_text())["aliases"] == {"lm_head.weight": "wte.weight"}

    model2, opt2 = trained_pair(seed=1)
    loaded = load_checkpoint(tmp_path / "ckpt.safetensors", model2, opt2)  # any spelling of the name
    assert loaded == meta
    assert_same_weights(model, model2)
    assert model2.lm_head.weight is model2.wte.weight  # still tied after loading
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for index, state in s1["state"].items():
        for name, value in state.items():
            assert torch.equal(value, s2["state"][index][name]), (index, name)


def test_load_into_a_different_shape_names_the_tensor_and_both_shapes(tmp_path):
    save_checkpoint(tmp_path / "ckpt", tiny_gpt(), meta={})
    wider = tiny_gpt(n_embd=32)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "ckpt", wider)
    message = str(err.value)
    assert "h.0.attn.c_attn.weight" in message
    assert "(48, 16)" in message and "(96, 32)" in message  # found and expected shapes
    for k, v in wider.state_dict().items():  # the model was not touched
        assert torch.equal(v, before[k])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing", tiny_gpt())


def test_truncated_tensor_file_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ckpt", tiny_gpt(), meta={})
    tensors, _ = checkpoint_paths(tmp_path / "ckpt")
    data = tensors.read_bytes()
    tensors.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "ckpt", tiny_gpt())


def test_corrupt_sidecar_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "ckpt", tiny_gpt(), meta={})
    _, sidecar = checkpoint_paths(tmp_path / "ckpt")
    sidecar.write_text(sidecar.read_text()[:40])
    with pytest.raises(CheckpointError, match="sidecar"):
        load_checkpoint(tmp_path / "ckpt", tiny_gpt())


def test_files_from_different_saves_are_refused(tmp_path):
    save_checkpoint(tmp_path / "a", tiny_gpt(0), meta={})
    save_checkpoint(tmp_path / "b", tiny_gpt(1), meta={})
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="different saves"):
        load_checkpoint(tmp_path / "a", tiny_gpt())


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    old = tiny_gpt(0)
    save_checkpoint(tmp_path / "ckpt", old, meta={"iter": 1})

    def write_half_then_die(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)  # a partial file...
        raise OSError("disk full")   # ...then the crash

    monkeypatch.setattr(ckpt, "save_file", write_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ckpt", tiny_gpt(1), meta={"iter": 2})
    monkeypatch.undo()

    fresh = tiny_gpt(2)
    assert load_checkpoint(tmp_path / "ckpt", fresh) == {"iter": 1}
    assert_same_weights(fresh, old)
    assert not list(tmp_path.glob("*.tmp"))  # the failed attempt cleaned up after itself


def test_crash_between_the_two_renames_rolls_forward(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "ckpt", tiny_gpt(0), meta={"iter": 1})
    new = tiny_gpt(1)
    real_replace, calls = os.replace, []

    def die_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the tensor file, before the sidecar
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", die_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "ckpt", new, meta={"iter": 2})
    monkeypatch.undo()

    fresh = tiny_gpt(2)
    assert load_checkpoint(tmp_path / "ckpt", fresh) == {"iter": 2}  # the save was completed
    assert_same_weights(fresh, new)
    assert load_checkpoint(tmp_path / "ckpt") == {"iter": 2}  # and stays consistent


@pytest.mark.parametrize("overrides", [{}, {"tie_weights": False}, {"style": "gpt1", "bias": False}])
def test_save_model_load_model_round_trip(tmp_path, overrides):
    model = tiny_gpt(3, **overrides).eval()
    path = save_model(tmp_path / "tiny", model)
    assert path.name == "tiny.safetensors"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    loaded = load_model(path)
    assert loaded.config == model.config
    assert not loaded.training
    assert_same_weights(loaded, model)
    assert (loaded.lm_head.weight is loaded.wte.weight) == model.config.tie_weights
    x = torch.randint(0, 23, (2, 16))
    assert torch.equal(loaded(x), model(x))


def test_load_model_from_a_training_checkpoint(tmp_path):
    model = tiny_gpt(4)
    save_checkpoint(tmp_path / "ckpt", model, meta={"model_config": model.config.to_dict()})
    assert_same_weights(load_model(tmp_path / "ckpt"), model)


def test_load_model_refuses_a_file_without_config(tmp_path):
    save_checkpoint(tmp_path / "ckpt", tiny_gpt(), meta={})
    with pytest.raises(CheckpointError, match="not a gptlib model file"):
        load_model(tmp_path / "ckpt.safetensors")
