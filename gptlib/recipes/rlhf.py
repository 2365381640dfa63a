"""Chapters 11-12's models: the pre-trained base, the SFT policy and the reward model.

Three stages, each written as an asset and read back by the next: ``rlhf/base`` (a character
GPT pre-trained on the toy world's web-like text), ``rlhf/sft`` (base fine-tuned on the
demonstrations of a pool of labellers, loss on the response only) and ``rlhf/reward`` (the SFT
body with a scalar head, trained as InstructGPT's was: K samples of the SFT policy per prompt
at temperature 1, ranked by the world's noisy labeller, all C(K, 2) pairs of a ranking in one
batch).
Also chapter 14's two arithmetic models, ``rlhf/calc-direct`` (writes the answer) and
``rlhf/calc-tool`` (writes a calculator call, then the result), independent of the others.
``--only rlhf/sft`` remakes one stage from the earlier ones under ``--out``.
"""

from __future__ import annotations

import dataclasses
import time

from gptlib.recipes.context import RecipeContext

STAGES = ("rlhf/base", "rlhf/sft", "rlhf/reward", "rlhf/calc-direct", "rlhf/calc-tool")


def _params(model) -> int:
    return model.num_params()  # without the position embeddings, as chapter 11 counts them


def make_base(ctx: RecipeContext, world, tok) -> None:
    import torch

    from gptlib.device import seed_everything
    from gptlib.model import GPT, GPTConfig
    from gptlib.train import TrainConfig, train

    s, t0 = ctx.settings["base"], time.perf_counter()
    seed_everything(ctx.settings["seed"])
    ids = torch.tensor(tok.encode(world.pretraining_text(s["chars"], seed=0)), dtype=torch.long)
    val = torch.tensor(tok.encode(world.pretraining_text(s["val_chars"], seed=1)), dtype=torch.long)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **ctx.settings["model"]))
    cfg = TrainConfig(
        max_iters=s["iters"],
        batch_size=s["batch_size"],
        block_size=s["block_size"],
        lr=s["lr"],
        min_lr=s["lr"] / 10,
        warmup_iters=s["warmup_iters"],
        eval_interval=s["eval_interval"],
        eval_iters=s["eval_iters"],
        progress=False,
        device=ctx.settings["device"],
        seed=ctx.settings["seed"],
    )
    res = train(model, cfg, ids, val)
    ctx.save(
        "rlhf/base",
        model=model,
        builder="gptlib.model:GPT.from_config",
        model_config=dataclasses.asdict(model.config),
        tokenizer=tok,
        metrics={"val_loss": res.final_val_loss, "params": _params(model)},
        history=res.history,
        wall_s=time.perf_counter() - t0,
    )


def make_sft(ctx: RecipeContext, world, tok) -> None:
    from gptlib import assets
    from gptlib.device import seed_everything
    from gptlib.rlhf.sft import sft_examples, train_sft

    s, t0 = ctx.settings["sft"], time.perf_counter()
    seed_everything(ctx.settings["seed"])
    model = assets.load("rlhf/base", root=ctx.out, device=ctx.settings["device"]).model
    res = train_sft(
        model,
        tok,
        sft_examples(world, "train", s["n_pairs"], concise_share=s["concise_share"]),
        iters=s["iters"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        val_pairs=sft_examples(world, "val", s["val_pairs"], concise_share=s["concise_share"]),
        seed=ctx.settings["seed"],
    )
    ctx.save(
        "rlhf/sft",
        model=model,
        builder="gptlib.model:GPT.from_config",
        model_config=dataclasses.asdict(model.config),
        tokenizer=tok,
        metrics={"val_loss": res.final_val_loss, "params": _params(model)},
        history=res.history,
        wall_s=time.perf_counter() - t0,
    )


def comparisons(settings: dict, world, sft, tok) -> tuple[list, list]:
    """The reward model's (train, val) rankings of SFT samples; the ppo recipe's DPO reuses them."""
    from gptlib.rlhf.reward import sample_comparisons

    s = settings["reward"]
    kw = dict(noise=s["noise"], extra_candidates=s["extra_candidates"],
              temperature=s["temperature"], max_new_tokens=s["max_new_tokens"])
    train = sample_comparisons(world, sft, tok, world.prompts("train", s["n_prompts"], seed=2),
                               s["k"], seed=0, **kw)
    val = sample_comparisons(world, sft, tok, world.prompts("val", s["val_prompts"], seed=2),
                             s["k"], seed=1, **kw)
    return train, val


def make_reward(ctx: RecipeContext, world, tok) -> None:
    from gptlib import assets
    from gptlib.device import seed_everything
    from gptlib.rlhf.reward import (
        RewardModel,
        comparison_accuracy,
        make_reward_fn,
        train_reward_model,
    )

    s, t0 = ctx.settings["reward"], time.perf_counter()
    seed_everything(ctx.settings["seed"])
    sft = assets.load("rlhf/sft", root=ctx.out, device=ctx.settings["device"]).model
    train_c, val_c = comparisons(ctx.settings, world, sft, tok)
    rm = RewardModel(sft)
    res = train_reward_model(
        rm,
        tok,
        train_c,
        iters=s["iters"],
        rankings_per_batch=s["rankings_per_batch"],
        lr=s["lr"],
        val=val_c,
        seed=ctx.settings["seed"],
    )
    acc = comparison_accuracy(make_reward_fn(rm, tok), val_c, gold=world)
    ctx.save(
        "rlhf/reward",
        model=rm,
        builder="gptlib.rlhf.reward:RewardModel.from_config",
        model_config=dataclasses.asdict(rm.gpt.config),
        tokenizer=tok,
        metrics={"val_loss": res.final_val_loss, "val_accuracy": acc,
                 "train_rankings": len(train_c),
                 "train_pairs": sum(len(c.pairs) for c in train_c)},
        history=res.history,
        wall_s=time.perf_counter() - t0,
    )


def make_calc(ctx: RecipeContext, use_tool: bool) -> None:
    """Chapter 14's small arithmetic model, with or without calculator calls."""
    import torch

    from gptlib.model import GPT, GPTConfig
    from gptlib.rlhf.sft import train_sft
    from gptlib.rlhf.tools import arithmetic_problems, calc_tokenizer, tool_demonstrations

    s, t0 = ctx.settings["calc"], time.perf_counter()
    problems = arithmetic_problems(s["n_problems"], seed=0)
    tok = calc_tokenizer(problems)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **s["model"]))
    res = train_sft(model, tok, tool_demonstrations(problems, use_tool), iters=s["iters"],
                    batch_size=s["batch_size"], lr=s["lr"])
    ctx.save(
        "rlhf/calc-tool" if use_tool else "rlhf/calc-direct",
        model=model,
        builder="gptlib.model:GPT.from_config",
        model_config=dataclasses.asdict(model.config),
        tokenizer=tok,
        metrics={"train_loss": (res.curve("train_loss")[1] or [None])[-1],
                 "problems": len(problems), "iters": s["iters"]},
        history=res.history,
        wall_s=time.perf_counter() - t0,
    )


def run(ctx: RecipeContext) -> None:
    import torch

    from gptlib.rlhf.world import ToyWorld, make_tokenizer
    from gptlib.settings import check_key

    only = ctx.settings.get("only") or None
    if only:
        check_key(only, STAGES, where="--only of the rlhf recipe")
    if ctx.settings["device"] == "cpu":
        torch.set_num_threads(1)
    world, tok = ToyWorld(ctx.settings["world_seed"]), make_tokenizer()
    makers = {"rlhf/base": make_base, "rlhf/sft": make_sft, "rlhf/reward": make_reward,
              "rlhf/calc-direct": lambda ctx, world, tok: make_calc(ctx, use_tool=False),
              "rlhf/calc-tool": lambda ctx, world, tok: make_calc(ctx, use_tool=True)}
    for name in STAGES:
        if only in (None, name):
            makers[name](ctx, world, tok)
