"""Chapter 13's PPO and DPO runs, and the aligned policies chapter 14 compares.

Every run starts from ``rlhf/sft`` and optimises against ``rlhf/reward`` (both made by the
``rlhf`` recipe): PPO with a fixed KL coefficient (a sweep over ``betas``), PPO with the
adaptive KL controller, the same plus PPO-ptx, and DPO on K = 4 rankings for each of
``dpo_betas``. Each run is evaluated on held-out test prompts (proxy reward, gold reward, KL
to the SFT model, pre-training loss). Written: ``rlhf/ppo`` (the adaptive-KL policy),
``rlhf/dpo`` (the DPO run with the best gold reward) and ``rlhf/ppo-runs`` (the curves).
Runs go to ``workers`` forked processes, each loading what it needs (no shared state).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gptlib.recipes.context import RecipeContext


class _Setup:
    """What every run needs, loaded in the process that does the run."""

    def __init__(self, settings: dict, source: Path | None) -> None:
        import torch

        from gptlib import assets
        from gptlib.rlhf.reward import make_reward_fn
        from gptlib.rlhf.world import ToyWorld

        torch.set_num_threads(1)
        self.settings = settings
        self.world = ToyWorld(0)
        sft = assets.load("rlhf/sft", root=source)
        self.sft, self.tok = sft.model, sft.tokenizer
        self.rm = assets.load("rlhf/reward", root=source).model
        self.reward_fn = make_reward_fn(self.rm, self.tok)
        self.eos = self.tok.encode("\n")[0]
        self.prompt_of = {p.formatted: p for p in self.world.prompts("train", 3000, seed=1)}
        self.test_prompts = self.world.prompts("test", settings["eval_prompts"], seed=0)
        chars = settings["pretrain_chars"]
        self.pre = torch.tensor(self.tok.encode(self.world.pretraining_text(chars, seed=5)))
        self.pre_val = torch.tensor(
            self.tok.encode(self.world.pretraining_text(chars // 5, seed=6))
        )
        self.ptx_gen = torch.Generator().manual_seed(0)

    def ptx_batch(self):
        from gptlib.evaluate import random_windows

        return random_windows(
            self.pre, self.settings["ptx_block_size"], self.settings["ptx_batch_size"], self.ptx_gen
        )

    def evaluate(self, lm) -> dict:
        from gptlib.evaluate import heldout_loss
        from gptlib.rlhf.rollout import evaluate_policy

        final = evaluate_policy(
            lm,
            self.sft,
            self.tok,
            self.world,
            self.test_prompts,
            self.reward_fn,
            max_new_tokens=self.settings["ppo"]["max_new_tokens"],
        )
        final["pretrain_loss"] = heldout_loss(
            lm,
            self.pre_val,
            block_size=self.settings["ptx_block_size"],
            batch_size=40,
            iters=1,
            seed=1,
        )
        return final


def _tasks(s: dict) -> list[tuple[str, str, int, Any]]:
    adaptive = dict(
        init_kl_coef=s["adaptive_init_kl_coef"],
        adaptive_kl=True,
        target_kl=s["target_kl"],
        kl_horizon=s["kl_horizon"],
    )
    tasks: list[tuple[str, str, int, Any]] = [
        ("ppo", f"ppo_beta{b:g}", s["ppo_steps"], {"init_kl_coef": b}) for b in s["betas"]
    ]
    tasks += [
        ("ppo", "ppo_adaptive", s["ppo_steps"], adaptive),
        ("ppo", "ppo_adaptive_ptx", s["ppo_steps"], {**adaptive, "ptx_coef": s["ptx_coef"]}),
    ]
    tasks += [("dpo", f"dpo_beta{b:g}", s["dpo_steps"], b) for b in s["dpo_betas"]]
    return tasks


def _run_task(task: tuple, settings: dict, source: Path | None) -> dict:
    """One run: ("ppo", name, steps, PPOConfig overrides) or ("dpo", name, steps, beta)."""
    import copy

    from gptlib.rlhf.dpo import train_dpo
    from gptlib.rlhf.ppo import PolicyWithValue, PPOConfig, PPOTrainer
    from gptlib.rlhf.reward import make_comparisons
    from gptlib.rlhf.rollout import gold_metrics_fn

    S = _Setup(settings, source)
    kind, name, steps, arg = task
    t0 = time.time()
    if kind == "ppo":
        policy = PolicyWithValue(copy.deepcopy(S.sft), critic=S.rm)  # value model from the RM
        cfg = PPOConfig(**{**settings["ppo"], "seed": settings["seed"], **arg})
        trainer = PPOTrainer(
            policy,
            S.sft,
            S.tok,
            list(S.prompt_of),
            S.reward_fn,
            cfg,
            eos_token=S.eos,
            ptx_batch=S.ptx_batch if cfg.ptx_coef > 0 else None,
            metrics_fn=gold_metrics_fn(S.world, S.prompt_of),
        )
        trainer.train(steps, progress=False)
        lm = policy.lm
        keep = (
            "step",
            "reward",
            "gold",
            "kl",
            "kl_coef",
            "entropy",
            "clipfrac",
            "response_len",
            "ptx_loss",
        )
        history = [{k: round(h[k], 5) for k in keep if k in h} for h in trainer.history]
        result: dict[str, Any] = {"config": arg}
    else:
        comps = make_comparisons(S.world, "train", settings["dpo_prompts"], 4, seed=0)
        pairs = [
            (c.prompt.formatted, c.responses[w], c.responses[lo])
            for c in comps
            for w, lo in c.pairs
        ]
        lm = copy.deepcopy(S.sft)
        hist = train_dpo(
            lm,
            S.sft,
            S.tok,
            pairs,
            beta=arg,
            steps=steps,
            batch_size=settings["dpo_batch_size"],
            lr=settings["dpo_lr"],
            seed=settings["seed"],
            progress=False,
        )
        history = [{k: round(v, 5) for k, v in h.items()} for h in hist]
        result = {"beta": arg}
    result.update(final=S.evaluate(lm), history=history, seconds=round(time.time() - t0, 1))
    result["state"] = {k: v.clone() for k, v in lm.state_dict().items()}
    print(
        name,
        f"{result['seconds']:.0f}s",
        {k: v for k, v in result["final"].items() if k != "samples"},
        flush=True,
    )
    return result


def run(ctx: RecipeContext) -> None:
    import copy
    import dataclasses
    import multiprocessing as mp

    s = ctx.settings
    # the chain rlhf -> ppo into one --out folder (the tests' quick runs), else the shipped models
    source = ctx.out if (ctx.out / "rlhf" / "sft" / "meta.json").exists() else None
    tasks = _tasks(s)
    args = [(t, s, source) for t in tasks]
    if s["workers"] > 1:
        with mp.get_context("fork").Pool(s["workers"]) as pool:
            results = pool.starmap(_run_task, args, chunksize=1)
    else:
        results = [_run_task(*a) for a in args]
    S = _Setup(s, source)
    runs: dict[str, Any] = {"sft": S.evaluate(S.sft), "runs": {}, "dpo": {}}
    states = {}
    for (kind, name, _, _), res in zip(tasks, results):
        states[name] = res.pop("state")
        runs["runs" if kind == "ppo" else "dpo"][name] = res
    # Chapter 14 evaluates the adaptive-KL PPO policy and the DPO policy with the best gold reward.
    best_dpo = max(runs["dpo"], key=lambda n: runs["dpo"][n]["final"]["gold"])
    runs["shipped"] = {"ppo": "ppo_adaptive", "dpo": best_dpo}
    finals = {"sft": {k: v for k, v in runs["sft"].items() if k != "samples"}}
    for group in ("runs", "dpo"):
        for name, res in runs[group].items():
            finals[name] = {k: v for k, v in res["final"].items() if k != "samples"}
    for asset, name in runs["shipped"].items():
        lm = copy.deepcopy(S.sft)
        lm.load_state_dict(states[name])
        group = "runs" if asset == "ppo" else "dpo"
        ctx.save(
            f"rlhf/{asset}",
            model=lm,
            builder="gptlib.model:GPT.from_config",
            model_config=dataclasses.asdict(lm.config),
            tokenizer=S.tok,
            metrics={"run": name, **finals[name]},
            history=runs[group][name]["history"],
        )
    ctx.save("rlhf/ppo-runs", metrics={"final": finals, "shipped": runs["shipped"]}, history=runs)
