"""Chapter 13's RLHF runs: PPO and DPO from the SFT policy, judged by the world's gold reward.

Every run starts from ``rlhf/sft`` and optimises against ``rlhf/reward`` (recipe ``rlhf``).
PPO as InstructGPT ran it: per-token KL to the SFT reference (adaptive controller), GAE, a
value model initialised from the reward model, rewards normalised, for ``seeds``; one run
with no KL penalty (over-optimisation) and one with PPO-ptx. DPO on the very comparisons the
reward model learned from, for the same seeds. Then a second round: rankings of the PPO
policy's own samples join the reward model's data, and PPO continues against the retrained
reward model. Every policy is scored on the same ``eval_prompts`` held-out test prompts.

Written: ``rlhf/ppo`` and ``rlhf/dpo`` (seed ``seeds[0]``), ``rlhf/ppo-round2``, and
``rlhf/ppo-runs`` (measurements: per-run curves, per-prompt gold rewards, bootstrap
intervals of PPO - SFT and DPO - SFT, win rates, the best-of-n line); last ``rlhf/chat``,
chapter 14's dialogue-tuned policy: ``rlhf/ppo`` fine-tuned on follow-up and correction
dialogues mixed with single-turn demonstrations (``--only rlhf/chat`` remakes just that one
from the ``rlhf/ppo`` in ``--out``, else the shipped one).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gptlib.recipes.context import RecipeContext


class _Setup:
    """What every run needs, loaded in the process that does the run (no shared state)."""

    def __init__(self, settings: dict, source: Path | None) -> None:
        import torch

        from gptlib import assets
        from gptlib.rlhf.reward import make_reward_fn
        from gptlib.rlhf.world import ToyWorld

        torch.set_num_threads(1)
        self.settings = settings
        self.world = ToyWorld(settings["world_seed"])
        sft = assets.load("rlhf/sft", root=source)
        self.sft, self.tok = sft.model, sft.tokenizer
        self.rm = assets.load("rlhf/reward", root=source).model
        self.reward_fn = make_reward_fn(self.rm, self.tok)
        self.eos = self.tok.encode("\n")[0]
        train = self.world.prompts("train", settings["train_prompts"], seed=1)
        self.prompt_of = {p.formatted: p for p in train}
        self.test_prompts = self.world.prompts("test", settings["eval_prompts"],
                                               seed=settings["eval_seed"])
        chars = settings["pretrain_chars"]
        self.pre = torch.tensor(self.tok.encode(self.world.pretraining_text(chars, seed=5)))
        val_text = self.world.pretraining_text(chars // 5, seed=6)
        self.pre_val = torch.tensor(self.tok.encode(val_text))
        self.ptx_gen = torch.Generator().manual_seed(0)

    def ptx_batch(self):
        from gptlib.evaluate import random_windows

        return random_windows(self.pre, self.settings["ptx_block_size"],
                              self.settings["ptx_batch_size"], self.ptx_gen)

    def evaluate(self, lm) -> dict:
        """Gold, proxy and KL of one T=1 sample per test prompt; greedy gold; pre-training loss."""
        import torch

        from gptlib.evaluate import heldout_loss
        from gptlib.rlhf.rollout import sample_with_kl
        from gptlib.rlhf.sft import generate_responses

        s, w = self.settings, self.world
        texts = [p.formatted for p in self.test_prompts]
        gen = torch.Generator().manual_seed(s["eval_seed"])
        replies, kl = sample_with_kl(lm, self.sft, self.tok, texts, s["max_new_tokens"],
                                     eos_token=self.eos, generator=gen)
        gold = [w.gold_reward(p, r) for p, r in zip(self.test_prompts, replies)]
        proxy = torch.as_tensor(self.reward_fn(texts, replies)).float().cpu()
        greedy = generate_responses(lm, self.tok, texts, s["max_new_tokens"], greedy=True)
        gold_greedy = [w.gold_reward(p, r) for p, r in zip(self.test_prompts, greedy)]
        by_kind: dict[str, list[float]] = {}
        for p, g in zip(self.test_prompts, gold):
            by_kind.setdefault(p.kind, []).append(g)
        return {"gold": sum(gold) / len(gold), "gold_greedy": sum(gold_greedy) / len(gold),
                "proxy": proxy.mean().item(), "kl": kl.mean().item(),
                "length": sum(len(r) for r in replies) / len(replies),
                "gold_by_kind": {k: sum(v) / len(v) for k, v in by_kind.items()},
                "pretrain_loss": heldout_loss(lm, self.pre_val, block_size=s["ptx_block_size"],
                                              batch_size=40, iters=1, seed=1),
                "per_prompt": {"gold": gold, "gold_greedy": gold_greedy},
                "samples": [[p.text, r] for p, r in zip(self.test_prompts[:10], replies[:10])]}


def _ppo(S: _Setup, name: str, steps: int, overrides: dict, seed: int, start=None,
         reward_model=None) -> dict:
    import copy

    from gptlib.rlhf.ppo import PolicyWithValue, PPOConfig, PPOTrainer
    from gptlib.rlhf.reward import make_reward_fn
    from gptlib.rlhf.rollout import gold_metrics_fn

    rm = reward_model if reward_model is not None else S.rm
    policy = PolicyWithValue(copy.deepcopy(start if start is not None else S.sft), critic=rm)
    cfg = PPOConfig(**{**S.settings["ppo"], "seed": seed, **overrides})
    trainer = PPOTrainer(policy, S.sft, S.tok, list(S.prompt_of), make_reward_fn(rm, S.tok), cfg,
                         eos_token=S.eos, ptx_batch=S.ptx_batch if cfg.ptx_coef > 0 else None,
                         metrics_fn=gold_metrics_fn(S.world, S.prompt_of))
    trainer.train(steps, progress=False)
    keep = ("step", "reward", "gold", "kl", "kl_coef", "entropy", "clipfrac", "response_len",
            "ptx_loss")
    history = [{k: round(h[k], 5) for k in keep if k in h} for h in trainer.history]
    return {"lm": policy.lm, "history": history, "config": {**overrides, "seed": seed}}


def _run_task(task: tuple, settings: dict, source: Path | None, comparisons: list) -> dict:
    """One run: ("ppo", name, seed, overrides) or ("dpo", name, seed, beta)."""
    import copy

    from gptlib.rlhf.dpo import train_dpo

    S = _Setup(settings, source)
    kind, name, seed, arg = task
    t0 = time.time()
    if kind == "ppo":
        out = _ppo(S, name, settings["ppo_steps"], arg, seed)
        lm, history, result = out["lm"], out["history"], {"config": out["config"]}
    else:
        pairs = [(c.prompt.formatted, c.responses[w], c.responses[lo])
                 for c in comparisons for w, lo in c.pairs]
        lm = copy.deepcopy(S.sft)
        hist = train_dpo(lm, S.sft, S.tok, pairs, beta=arg, steps=settings["dpo_steps"],
                         batch_size=settings["dpo_batch_size"], lr=settings["dpo_lr"], seed=seed,
                         progress=False)
        history = [{k: round(v, 5) for k, v in h.items()} for h in hist]
        result = {"config": {"beta": arg, "seed": seed}}
    result.update(final=S.evaluate(lm), history=history, seconds=round(time.time() - t0, 1))
    result["state"] = {k: v.clone() for k, v in lm.state_dict().items()}
    f = result["final"]
    print(f"{name}: {result['seconds']:.0f} s, gold {f['gold']:.3f} "
          f"(greedy {f['gold_greedy']:.3f}), proxy {f['proxy']:.3f}, KL {f['kl']:.2f}", flush=True)
    return result


def _run_tasks(args: list[tuple], workers: int) -> list[dict]:
    """``_run_task`` over ``args``: in ``workers`` forked processes, or here when 1."""
    import multiprocessing as mp

    if workers > 1 and len(args) > 1:
        with mp.get_context("fork").Pool(min(workers, len(args))) as pool:
            return pool.starmap(_run_task, args, chunksize=1)
    return [_run_task(*a) for a in args]


def _tasks(s: dict) -> list[tuple[str, str, int, Any]]:
    tasks: list[tuple[str, str, int, Any]] = [("ppo", f"ppo_seed{k}", k, {}) for k in s["seeds"]]
    tasks += [("ppo", f"ppo_beta0_seed{k}", k, {"adaptive_kl": False, "init_kl_coef": 0.0})
              for k in s["seeds"]]
    tasks += [("ppo", f"ppo_ptx_seed{k}", k, {"ptx_coef": s["ptx_coef"]}) for k in s["seeds"]]
    tasks += [("dpo", f"dpo_seed{k}", k, s["dpo_beta"]) for k in s["seeds"]]
    return tasks


def _round2(S: _Setup, ppo_lm, comparisons: list, settings: dict, rcfg: dict) -> dict:
    """Rank the PPO policy's own samples, retrain the reward model on old + new, PPO again."""
    import copy

    from gptlib.rlhf.reward import sample_comparisons, train_reward_model

    r2 = settings["round2"]
    t0 = time.time()
    prompts = S.world.prompts("train", r2["n_prompts"], seed=3)
    new = sample_comparisons(S.world, ppo_lm, S.tok, prompts, rcfg["k"], noise=rcfg["noise"],
                             extra_candidates=rcfg["extra_candidates"],
                             max_new_tokens=rcfg["max_new_tokens"], seed=2)
    rm2 = copy.deepcopy(S.rm).train()
    train_reward_model(rm2, S.tok, comparisons + new, iters=r2["rm_iters"],
                       rankings_per_batch=rcfg["rankings_per_batch"], lr=r2["rm_lr"], seed=1)
    rm2.eval()
    out = _ppo(S, "ppo_round2", r2["ppo_steps"], {}, settings["seeds"][0], start=ppo_lm,
               reward_model=rm2)
    return {"lm": out["lm"], "history": out["history"], "new_rankings": len(new),
            "final": S.evaluate(out["lm"]), "seconds": round(time.time() - t0, 1)}


def _summary(runs: dict, sft: dict, seeds: list, names: dict) -> dict:
    """PPO - SFT and DPO - SFT per prompt (mean over seeds), bootstrap intervals, win rates."""
    import torch

    from gptlib.rlhf.evaluation import paired_bootstrap, win_rate_of

    out: dict[str, Any] = {}
    base = {m: torch.tensor(sft["per_prompt"][m]) for m in ("gold", "gold_greedy")}
    for label, prefix in names.items():
        for mode in ("gold", "gold_greedy"):
            per_seed = torch.tensor([runs[f"{prefix}{k}"]["final"]["per_prompt"][mode]
                                     for k in seeds])
            diff, lo, hi = paired_bootstrap(per_seed.mean(0), base[mode])
            seed_means = [float(x) for x in per_seed.mean(1)]
            out[f"{label}_minus_sft" + ("_greedy" if mode != "gold" else "")] = {
                "diff": diff, "ci95": [lo, hi], "per_seed": [m - float(base[mode].mean())
                                                             for m in seed_means],
                "win_rate": sum(win_rate_of(row, base[mode]) for row in per_seed) / len(seeds)}
    return out


# the summary's families of runs: label -> run-name prefix (one run per seed)
_FAMILIES = {"ppo": "ppo_seed", "dpo": "dpo_seed", "ppo_beta0": "ppo_beta0_seed",
             "ppo_ptx": "ppo_ptx_seed"}
# runs named before every family had one run per seed
_OLD_NAMES = {"ppo_beta0": "ppo_beta0_seed0", "ppo_ptx": "ppo_ptx_seed0"}


def _final(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in ("per_prompt", "samples")}


def _comparisons(S: _Setup, source: Path | None) -> tuple[list, dict]:
    """The rankings the reward model learned from (DPO learns from the same), and the rlhf
    recipe's settings; ``dpo_prompts`` > 0 takes only so many (the quick run's shortcut)."""
    from gptlib import assets
    from gptlib.recipes.rlhf import comparisons as rm_comparisons

    s = S.settings
    rlhf_settings = assets.load("rlhf/reward", root=source).meta["settings"]
    if s["dpo_prompts"]:
        rlhf_settings["reward"].update(n_prompts=s["dpo_prompts"], val_prompts=2,
                                       max_new_tokens=s["max_new_tokens"])
    train_c, _ = rm_comparisons(rlhf_settings, S.world, S.sft, S.tok)
    return train_c, rlhf_settings


def _extend_runs(ctx: RecipeContext) -> None:
    """``--only rlhf/ppo-runs``: run the tasks the existing ``rlhf/ppo-runs`` lacks, then
    recompute its summary; every other number of the asset is kept, and no model asset changes.

    Each run depends only on its own task (its own process, seed and generators), so the result
    is what the whole recipe gives; ``meta.json`` keeps the whole recipe's command.
    """

    from gptlib import assets

    s = ctx.settings
    root = ctx.root_of("rlhf/ppo-runs")
    old = assets.load("rlhf/ppo-runs", root=root).meta
    source = ctx.root_of("rlhf/sft")
    runs = {_OLD_NAMES.get(k, k): v for k, v in old["history"]["runs"].items()}
    missing = [t for t in _tasks(s) if t[1] not in runs]
    print(f"[ppo] adding {[t[1] for t in missing]} to rlhf/ppo-runs", flush=True)
    train_c: list = []
    if any(t[0] == "dpo" for t in missing):
        S = _Setup(s, source)
        train_c, _ = _comparisons(S, source)
    results = _run_tasks([(t, s, source, train_c) for t in missing], s["workers"])
    for (_, name, _, _), res in zip(missing, results):
        res.pop("state")
        runs[name] = res
    sft_eval = old["history"]["sft"]
    metrics = dict(old["metrics"])
    metrics["final"] = {"sft": metrics["final"]["sft"],
                        **{n: _final(r["final"]) for n, r in runs.items()},
                        "ppo_round2": metrics["final"]["ppo_round2"]}
    summary = _summary(runs, sft_eval, s["seeds"], _FAMILIES)
    summary["round2_minus_round1"] = old["metrics"]["summary"]["round2_minus_round1"]
    metrics["summary"] = summary
    metrics["seeds"] = s["seeds"]
    metrics["extended"] = [*old["metrics"].get("extended", []),
                           {"command": ctx.command, "runs": [t[1] for t in missing],
                            "wall_s": round(ctx.elapsed(), 1)}]
    history = {**old["history"], "runs": runs}
    path = assets.save("rlhf/ppo-runs", command=old["command"], root=ctx.out,
                       settings={**old["settings"], **{k: v for k, v in s.items() if k != "only"}},
                       metrics=metrics, history=history, wall_s=old["wall_s"] + ctx.elapsed())
    print(f"[ppo] wrote {path}", flush=True)


def _chat(ctx: RecipeContext) -> None:
    """Chapter 14's step from InstructGPT to ChatGPT: PPO fine-tuned on dialogues."""
    import random

    import torch

    from gptlib import assets
    from gptlib.rlhf.dialogue import (
        admits_mistake,
        correction_demonstration,
        correction_dialogues,
        follow_up_dialogues,
    )
    from gptlib.rlhf.sft import generate_responses, train_sft
    from gptlib.rlhf.world import ToyWorld

    torch.set_num_threads(1)
    s, c, t0 = ctx.settings, ctx.settings["chat"], time.perf_counter()
    world = ToyWorld(s["world_seed"])
    root = ctx.root_of("rlhf/ppo")
    ppo = assets.load("rlhf/ppo", root=root)
    lm, tok = ppo.model, ppo.tokenizer
    demos = [(t, world.demonstration(p)) for t, p in follow_up_dialogues(world, c["follow_ups"],
                                                                         seed=100)]
    demos += [(t, correction_demonstration(p)) for t, p in correction_dialogues(
        world, "train", c["corrections"], seed=100, wrong_share=c["wrong_share"])]
    demos += [(p.formatted, world.demonstration(p))
              for p in world.prompts("train", c["single"], seed=4)]
    random.Random(0).shuffle(demos)
    res = train_sft(lm, tok, demos, iters=c["iters"], batch_size=c["batch_size"], lr=c["lr"],
                    seed=0)
    tests = {"follow-up": follow_up_dialogues(world, c["eval"], seed=1),
             "mistake": correction_dialogues(world, "test", c["eval"], seed=3),
             "stands": correction_dialogues(world, "test", c["eval"], seed=4, wrong_share=0.0)}
    metrics: dict = {"demonstrations": len(demos)}
    for kind, items in tests.items():
        replies = generate_responses(lm, tok, [t for t, _ in items], min(48, s["max_new_tokens"]),
                                     greedy=True)
        ok = [admits_mistake(p, r) if kind != "follow-up" else p.answer in r
              for (_, p), r in zip(items, replies)]
        metrics[kind] = sum(ok) / len(ok)
        metrics[f"gold {kind}"] = sum(world.gold_reward(p, r)
                                      for (_, p), r in zip(items, replies)) / len(items)
    ctx.save("rlhf/chat", model=lm, builder="gptlib.model:GPT.from_config",
             model_config=_asdict(lm.config), tokenizer=tok, metrics=metrics,
             history=res.history, wall_s=time.perf_counter() - t0)


def _asdict(config) -> dict:
    import dataclasses

    return dataclasses.asdict(config)


def run(ctx: RecipeContext) -> None:
    import copy
    import dataclasses

    from gptlib.rlhf.evaluation import best_of_n, sample_gold, score_samples

    s = ctx.settings
    if s["only"] == "rlhf/chat":
        _chat(ctx)
        return
    if s["only"] == "rlhf/ppo-runs":
        _extend_runs(ctx)
        return
    if s["only"]:
        raise ValueError(f"--only {s['only']!r}: this recipe makes alone only 'rlhf/chat' or "
                         "'rlhf/ppo-runs' (its missing runs); leave it empty to make them all")
    # the chain rlhf -> ppo into one --out folder (the tests' quick runs), else the shipped models
    source = ctx.root_of("rlhf/sft")
    S = _Setup(s, source)
    train_c, rlhf_settings = _comparisons(S, source)
    tasks = _tasks(s)
    results = _run_tasks([(t, s, source, train_c) for t in tasks], s["workers"])
    runs = {name: res for (_, name, _, _), res in zip(tasks, results)}
    states = {name: res.pop("state") for name, res in runs.items()}
    sft_eval = S.evaluate(S.sft)
    first = s["seeds"][0]
    ppo_lm = copy.deepcopy(S.sft)
    ppo_lm.load_state_dict(states[f"ppo_seed{first}"])
    round2 = _round2(S, ppo_lm, train_c, s, rlhf_settings["reward"])
    # best-of-n: n samples of the SFT policy per test prompt, the reward model picks
    replies, gold = sample_gold(S.sft, S.tok, S.world, S.test_prompts, n_samples=s["best_of_n"],
                                seed=s["eval_seed"] + 1, max_new_tokens=s["max_new_tokens"])
    proxy = score_samples(S.reward_fn, S.test_prompts, replies)
    ns = [n for n in (1, 2, 4, 8, 16) if n <= s["best_of_n"]]
    bon = {"n": ns, "gold": [float(best_of_n(gold, proxy, n).mean()) for n in ns],
           "gold_oracle": [float(best_of_n(gold, None, n).mean()) for n in ns]}
    summary = _summary(runs, sft_eval, s["seeds"], _FAMILIES)
    round1 = runs[f"ppo_seed{first}"]["final"]["gold"]
    summary["round2_minus_round1"] = round2["final"]["gold"] - round1
    finals = {"sft": {k: v for k, v in sft_eval.items() if k not in ("per_prompt", "samples")}}
    for name, res in runs.items():
        finals[name] = _final(res["final"])
    finals["ppo_round2"] = _final(round2["final"])
    tok, cfg = S.tok, dataclasses.asdict(S.sft.config)
    shipped = {"rlhf/ppo": (f"ppo_seed{first}", ppo_lm, runs[f"ppo_seed{first}"]["history"])}
    dpo_lm = copy.deepcopy(S.sft)
    dpo_lm.load_state_dict(states[f"dpo_seed{first}"])
    shipped["rlhf/dpo"] = (f"dpo_seed{first}", dpo_lm, runs[f"dpo_seed{first}"]["history"])
    shipped["rlhf/ppo-round2"] = ("ppo_round2", round2["lm"], round2["history"])
    for asset, (name, lm, history) in shipped.items():
        ctx.save(asset, model=lm, builder="gptlib.model:GPT.from_config", model_config=cfg,
                 tokenizer=tok, metrics={"run": name, **finals[name]}, history=history)
    history = {"sft": sft_eval, "runs": runs, "round2": {k: v for k, v in round2.items()
                                                         if k != "lm"}}
    ctx.save("rlhf/ppo-runs", metrics={"final": finals, "summary": summary, "best_of_n": bon,
                                       "seeds": s["seeds"],
                                       "comparisons": {"rankings": len(train_c),
                                                       "round2_rankings": round2["new_rankings"]}},
             history=history)
    print({k: (round(v["diff"], 3), [round(x, 3) for x in v["ci95"]])
           for k, v in summary.items() if isinstance(v, dict)}, flush=True)
    _chat(ctx)
