"""gptlib.train: schedule, configs, the loop, exact resume, data parallelism, the CLI."""
from __future__ import annotations

import json
import math
import os
import runpy
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gptlib.checkpoint import CheckpointError, load_model
from gptlib.model import GPT, GPTConfig
from gptlib.paths import CONFIGS
from gptlib.train import TrainConfig, lr_at, main, parse_overrides, train

VOCAB, BLOCK = 19, 16


# Tiny models: one thread each (see conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed: int = 0, dropout: float = 0.0, **overrides) -> GPT:
    torch.manual_seed(seed)
    kw = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, dropout=dropout)
    return GPT(GPTConfig.gpt2(**{**kw, **overrides}))


@pytest.fixture(scope="module")
def tokens() -> tuple[torch.Tensor, torch.Tensor]:
    # A learnable sequence (mostly "next = current + 1 mod V") with some noise.
    g = torch.Generator().manual_seed(0)
    steps = torch.where(torch.rand(6000, generator=g) < 0.8, 1, torch.randint(0, VOCAB, (6000,), generator=g))
    ids = torch.cumsum(steps, 0) % VOCAB
    return ids[:5000], ids[5000:]


def small_cfg(**overrides) -> TrainConfig:
    kw = dict(max_iters=12, batch_size=4, block_size=BLOCK, lr=3e-3, min_lr=3e-4, warmup_iters=2,
              eval_interval=4, eval_iters=2, log_interval=1, progress=False, device="cpu", seed=3)
    return TrainConfig(**{**kw, **overrides})


def without_time(history):
    return [{k: v for k, v in h.items() if k != "time"} for h in history]


# ----------------------------------------------------------------------------- schedule


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(max_iters=1000, lr=1e-3, min_lr=1e-4, warmup_iters=100)
    lrs = [lr_at(it, cfg) for it in range(1200)]
    assert lrs[0] == pytest.approx(1e-3 / 101)                      # not a wasted zero step
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:101]))        # linear warm-up...
    assert lrs[100] == pytest.approx(1e-3)                          # ...to the peak
    assert all(a >= b for a, b in zip(lrs[100:1000], lrs[101:1001]))  # cosine decay
    assert lrs[550] == pytest.approx(5.5e-4)                        # half-way: the mean
    assert lrs[1000] == lrs[1199] == pytest.approx(1e-4)            # floor after decay
    assert lr_at(500, TrainConfig(max_iters=1000, lr_decay_iters=500)) == pytest.approx(1e-4)


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["shakespeare_char.toml", "shakespeare_char_tiny.toml"])
def test_shipped_configs_load(name):
    cfg = TrainConfig.from_toml(CONFIGS / name)
    assert cfg.model["style"] == "gpt2" and cfg.data["name"] == "shakespeare_char"
    assert cfg.betas == (0.9, 0.99)
    if name == "shakespeare_char.toml":
        assert (cfg.model["n_layer"], cfg.model["n_head"], cfg.model["n_embd"]) == (6, 6, 384)
        assert (cfg.block_size, cfg.batch_size, cfg.max_iters, cfg.eval_iters) == (256, 64, 5000, 200)
        assert cfg.model["dropout"] == 0.2


def test_tiny_config_is_about_0_8m_parameters():
    cfg = TrainConfig.from_toml(CONFIGS / "shakespeare_char_tiny.toml")
    model = GPT(GPTConfig(**{"block_size": cfg.block_size, **cfg.model, "vocab_size": 71}))
    assert 0.7e6 < model.num_params() < 0.9e6


def test_overrides_and_unknown_keys():
    path = CONFIGS / "shakespeare_char_tiny.toml"
    cfg = TrainConfig.from_toml(path, max_iters=7, lr=1, **{"model.n_layer": 2, "data.seed": 5})
    assert (cfg.max_iters, cfg.lr, cfg.model["n_layer"], cfg.data["seed"]) == (7, 1.0, 2, 5)
    assert isinstance(cfg.lr, float)
    with pytest.raises(ValueError, match="(?s)max_iter'.*Did you mean 'max_iters'.*Valid settings:.*batch_size"):
        TrainConfig.from_toml(path, max_iter=7)
    with pytest.raises(ValueError, match="n_layers.*model"):
        TrainConfig.from_toml(path, **{"model.n_layers": 2})


def test_parse_overrides():
    assert parse_overrides(["--max_iters", "200", "--lr=3e-4", "--out_dir", "runs/x", "--compile",
                            "--model.dropout", "0", "--betas", "[0.9, 0.95]", "--device", "none"]) == {
        "max_iters": 200, "lr": 3e-4, "out_dir": "runs/x", "compile": True,
        "model.dropout": 0, "betas": [0.9, 0.95], "device": None}


# ----------------------------------------------------------------------------- the loop


def test_training_lowers_the_loss_and_records_history(tokens):
    train_ids, val_ids = tokens
    seen = []
    result = train(tiny_gpt(), small_cfg(max_iters=40, eval_interval=20, log_interval=5),
                   train_ids, val_ids, callback=seen.append)
    h = result.history
    assert seen == h
    assert [e["iter"] for e in h] == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert "val_loss" in h[0] and "train_loss" not in h[0]
    assert h[0]["val_loss"] == pytest.approx(math.log(VOCAB), abs=0.3)  # untrained: ~uniform
    assert [e["iter"] for e in h if "val_loss" in e] == [0, 20, 40]
    assert all({"iter", "lr", "time", "train_loss", "grad_norm"} <= e.keys() for e in h[1:])
    assert result.final_val_loss == h[-1]["val_loss"] < h[0]["val_loss"] - 0.5
    assert result.best_val_loss == min(e["val_loss"] for e in h if "val_loss" in e)
    assert result.iters == 40 and result.tokens_per_sec > 0
    assert result.curve("val_loss")[0] == [0, 20, 40]


def test_evaluation_does_not_change_the_training_batches(tokens):
    """Evaluation draws from its own generator and switches dropout off: training with or
    without evaluations must follow exactly the same path."""
    train_ids, val_ids = tokens
    a = train(tiny_gpt(dropout=0.1), small_cfg(max_iters=6, eval_interval=2), train_ids, val_ids)
    b = train(tiny_gpt(dropout=0.1), small_cfg(max_iters=6), train_ids)
    assert [e["train_loss"] for e in a.history if "train_loss" in e] == [e["train_loss"] for e in b.history]


def test_resume_is_bit_identical_to_an_uninterrupted_run(tokens, tmp_path):
    """Train 8 steps, save, resume to 12 == train to 12 in one go, to the last bit.

    Dropout is on, so this also checks that torch's global RNG is saved and restored.
    """
    train_ids, val_ids = tokens
    cfg = dict(dropout=0.2)
    full = train(tiny_gpt(**cfg), small_cfg(max_iters=12), train_ids, val_ids)

    first = train(tiny_gpt(**cfg), small_cfg(max_iters=8, lr_decay_iters=12, out_dir=str(tmp_path)),
                  train_ids, val_ids)
    assert first.checkpoint == tmp_path / "ckpt.safetensors"
    # A fresh model with different initial weights: everything must come from the checkpoint.
    torch.manual_seed(999)
    resumed = train(tiny_gpt(seed=5, **cfg), small_cfg(max_iters=12), train_ids, val_ids,
                    resume=tmp_path / "ckpt")
    assert without_time(resumed.history) == without_time(full.history)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_resume_into_a_different_shape_is_a_clear_error(tokens, tmp_path):
    train_ids, _ = tokens
    train(tiny_gpt(), small_cfg(max_iters=2, out_dir=str(tmp_path)), train_ids)
    with pytest.raises(CheckpointError, match=r"wpe.weight.*\(16, 32\).*\(16, 64\)"):
        train(tiny_gpt(n_embd=64), small_cfg(max_iters=4), train_ids, resume=tmp_path / "ckpt")


def test_gradient_accumulation_matches_one_big_batch(tokens):
    """2 micro-batches of 4 (loss / 2 each) give the same update as one batch of 8."""
    train_ids, _ = tokens
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, len(train_ids) - BLOCK - 1, (10, 8), generator=g)
    windows = [torch.stack([train_ids[s:s + BLOCK + 1] for s in row]) for row in starts]

    def feeder(micro: int):
        pieces = iter([w[i:i + micro] for w in windows for i in range(0, 8, micro)])
        return lambda generator: (lambda w: (w[:, :-1], w[:, 1:]))(next(pieces))

    big = train(tiny_gpt(), small_cfg(max_iters=5, batch_size=8), feeder(8))
    accum = train(tiny_gpt(), small_cfg(max_iters=5, batch_size=4, grad_accum_steps=2), feeder(4))
    for a, b in zip(big.history, accum.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)


def test_batch_fn_and_custom_loss_train_any_module():
    """A classifier with no configure_optimizer trains through the same loop."""
    w_true = torch.randn(8, generator=torch.Generator().manual_seed(1))

    def batch_fn(generator):
        x = torch.randn(32, 8, generator=generator)
        return {"x": x, "label": (x @ w_true > 0).long()}

    def loss_fn(model, batch):
        return torch.nn.functional.cross_entropy(model(batch["x"]), batch["label"])

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    result = train(model, small_cfg(max_iters=60, lr=1e-2, eval_interval=30, eval_iters=4),
                   batch_fn, batch_fn, loss_fn=loss_fn)
    assert result.final_val_loss < 0.5 * result.history[0]["val_loss"]


# ----------------------------------------------------------------------------- data parallel

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    from gptlib.model import GPT, GPTConfig
    from gptlib.train import TrainConfig, train

    def run(batch_size, out_dir):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 19, (3000,), generator=g)
        torch.manual_seed(0)
        model = GPT(GPTConfig.gpt2(vocab_size=19, block_size=16, n_layer=2, n_head=2, n_embd=32))
        cfg = TrainConfig(max_iters=5, batch_size=batch_size, block_size=16, lr=3e-3, min_lr=3e-4,
                          warmup_iters=1, grad_accum_steps=2, eval_interval=5, eval_iters=2,
                          log_interval=1, progress=False, device="cpu", out_dir=out_dir)
        return train(model, cfg, ids[:2500], ids[2500:]).history

    if __name__ == "__main__":
        torch.set_num_threads(1)
        history = run(int(sys.argv[2]), sys.argv[3])
        if os.environ["RANK"] == "0":
            json.dump(history, open(sys.argv[1], "w"))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_double_batch(tmp_path):
    """Two gloo processes with batch 4 each (grad accumulation 2, so no_sync is exercised)
    follow the same loss curve as one process with batch 8.

    The workers get the environment torchrun would give them (RANK, WORLD_SIZE, ...);
    launching them directly saves two interpreter start-ups over ``torchrun``.
    """
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1]),
           "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    workers = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path / "two.json"), "4",
                          str(tmp_path / "ckpt2")],
                         env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for rank in range(2)
    ]
    one = runpy.run_path(str(script))["run"](8, None)  # meanwhile, the single-process reference
    for w in workers:
        output = w.communicate(timeout=120)[0].decode()
        assert w.returncode == 0, output
    two = json.loads((tmp_path / "two.json").read_text())
    assert [e["iter"] for e in one] == [e["iter"] for e in two] == [0, 1, 2, 3, 4, 5]
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["iter"], key)
    # Rank 0 wrote a checkpoint holding every process's RNG state.
    meta = json.loads((tmp_path / "ckpt2" / "ckpt.json").read_text())["meta"]
    assert meta["iter"] == 5 and meta["world_size"] == 2 and len(meta["rng"]["torch_per_rank"]) == 2


# ----------------------------------------------------------------------------- CLI


def test_cli_rejects_unknown_keys(capsys):
    with pytest.raises(SystemExit, match="(?s)unknown setting 'max_iter'.*Valid settings"):
        main([str(CONFIGS / "shakespeare_char_tiny.toml"), "--max_iter", "3"])


def test_cli_trains_and_saves_everything(tmp_path, capsys):
    out = tmp_path / "run"
    main([str(CONFIGS / "shakespeare_char_tiny.toml"), "--max_iters", "3", "--eval_iters", "1",
          "--batch_size", "2", "--progress", "false", "--out_dir", str(out)])
    printed = capsys.readouterr().out
    assert "final val loss" in printed and "rebuild with: python -m gptlib.train" in printed
    assert {p.name for p in out.iterdir()} >= {"ckpt.safetensors", "ckpt.json",
                                               "model.safetensors", "tokenizer.json"}
    model = load_model(out / "model.safetensors")
    assert model.config.n_layer == 4 and model.config.block_size == 64
