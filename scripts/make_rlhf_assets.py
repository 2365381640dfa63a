"""Make the checkpoints of chapters 11-14: assets/rlhf/{base,sft,reward}.

    OMP_NUM_THREADS=1 python scripts/make_rlhf_assets.py            # all three, in order
    OMP_NUM_THREADS=1 python scripts/make_rlhf_assets.py --stage sft  # one stage (needs the earlier ones)

1. base: a small character GPT pre-trained on ToyWorld(0).pretraining_text (web-like, misaligned);
2. sft: the base model fine-tuned on labeller demonstrations of train-split prompts (response-only loss);
3. reward: the SFT model with a scalar head, trained on K=4 rankings of train-split prompts.

Each folder gets model.safetensors + tokenizer.json (+ head.safetensors for the RM) and info.json
(the command, the settings, the wall time and the final losses).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gptlib.checkpoint import load_model, save_model
from gptlib.device import seed_everything
from gptlib.model import GPT, GPTConfig
from gptlib.paths import ASSETS
from gptlib.rlhf.reward import (
    RewardModel, comparison_accuracy, make_comparisons, make_reward_fn, save_reward_model, train_reward_model,
)
from gptlib.rlhf.sft import sft_examples, train_sft
from gptlib.rlhf.world import ToyWorld, make_tokenizer
from gptlib.train import TrainConfig, train

MODEL = dict(block_size=192, n_layer=3, n_head=4, n_embd=64, dropout=0.0)
SETTINGS = {
    "base": dict(chars=1_500_000, iters=1600, batch_size=16, block_size=96, lr=3e-3),
    "sft": dict(n_pairs=4000, iters=250, batch_size=32, lr=1e-3),
    "reward": dict(n_prompts=3000, k=4, iters=250, rankings_per_batch=8, lr=5e-4),
}


def _info(folder: Path, stage: str, t0: float, **extra) -> None:
    info = {"command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv), "stage": stage,
            "settings": SETTINGS[stage], "model": MODEL, "seconds": round(time.time() - t0, 1), **extra}
    (folder / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


def make_base(out: Path, world: ToyWorld, tok) -> None:
    s = SETTINGS["base"]
    t0 = time.time()
    seed_everything(0)
    ids = torch.tensor(tok.encode(world.pretraining_text(s["chars"], seed=0)), dtype=torch.long)
    val = torch.tensor(tok.encode(world.pretraining_text(s["chars"] // 20, seed=1)), dtype=torch.long)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **MODEL))
    cfg = TrainConfig(max_iters=s["iters"], batch_size=s["batch_size"], block_size=s["block_size"], lr=s["lr"],
                      min_lr=s["lr"] / 10, warmup_iters=50, eval_interval=800, eval_iters=10, progress=False,
                      device="cpu", seed=0)
    res = train(model, cfg, ids, val)
    folder = out / "base"
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / "model.safetensors", model)
    tok.save(folder / "tokenizer.json")
    _info(folder, "base", t0, val_loss=res.final_val_loss, params=model.num_params())


def make_sft(out: Path, world: ToyWorld, tok) -> None:
    s = SETTINGS["sft"]
    t0 = time.time()
    seed_everything(0)
    model = load_model(out / "base" / "model.safetensors", eval_mode=False)
    res = train_sft(model, tok, sft_examples(world, "train", s["n_pairs"]), iters=s["iters"],
                    batch_size=s["batch_size"], lr=s["lr"], val_pairs=sft_examples(world, "val", 400), seed=0)
    folder = out / "sft"
    folder.mkdir(parents=True, exist_ok=True)
    save_model(folder / "model.safetensors", model)
    tok.save(folder / "tokenizer.json")
    _info(folder, "sft", t0, val_loss=res.final_val_loss)


def make_reward(out: Path, world: ToyWorld, tok) -> None:
    s = SETTINGS["reward"]
    t0 = time.time()
    seed_everything(0)
    rm = RewardModel(load_model(out / "sft" / "model.safetensors", eval_mode=False))
    train_c = make_comparisons(world, "train", s["n_prompts"], s["k"], seed=0)
    val_c = make_comparisons(world, "val", 300, s["k"], seed=0)
    res = train_reward_model(rm, tok, train_c, iters=s["iters"], rankings_per_batch=s["rankings_per_batch"],
                             lr=s["lr"], val=val_c, seed=0)
    acc = comparison_accuracy(make_reward_fn(rm, tok), val_c, gold=world)
    save_reward_model(out / "reward", rm, tok)
    _info(out / "reward", "reward", t0, val_loss=res.final_val_loss, val_accuracy=acc)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=["base", "sft", "reward", "all"], default="all")
    ap.add_argument("--out", default=str(ASSETS / "rlhf"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step count (a quick smoke run: 0.02)")
    args = ap.parse_args(argv)
    for stage in SETTINGS.values():
        stage["iters"] = max(2, int(stage["iters"] * args.scale))
    torch.set_num_threads(1)
    out = Path(args.out)
    world, tok = ToyWorld(0), make_tokenizer()
    stages = ["base", "sft", "reward"] if args.stage == "all" else [args.stage]
    for stage in stages:
        {"base": make_base, "sft": make_sft, "reward": make_reward}[stage](out, world, tok)


if __name__ == "__main__":
    main()
