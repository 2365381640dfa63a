"""Chapter 8's code model ``codex/small`` and its pass@k measurements.

Trains a character GPT-2 on problems composed from primitives (:mod:`gptlib.codebench`,
training templates only), then samples ``n`` completions per test problem of every tier at
several temperatures, judges them (:mod:`gptlib.verdict`), and stores per-problem counts,
pass@k, and pass@1 of the sample ranked first by mean log-probability. HumanEval is scored
too, for scale. Everything lands in the asset's ``meta["metrics"]``.
"""

from __future__ import annotations

import dataclasses
import time

from gptlib.recipes.context import RecipeContext


def run(ctx: RecipeContext) -> None:
    import torch

    from gptlib import codebench, codex
    from gptlib.device import seed_everything
    from gptlib.train import TrainConfig, build_model, history_last, train

    s = ctx.settings
    seed_everything(s["seed"])
    tok = codex.code_tokenizer()
    text = codebench.training_text(s["data"]["problems"], seed=s["data"]["seed"])
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    split = int(0.95 * len(ids))
    cfg = TrainConfig.from_dict({**s["train"], "out_dir": None, "progress": not ctx.quick})
    model = build_model(cfg, tok.vocab_size)
    result = train(model, cfg, ids[:split], ids[split:])
    model = result.model.eval()
    train_s = ctx.elapsed()

    ev = s["eval"]
    tiers = {}
    for tier in codebench.TIERS:
        problems = codebench.test_problems(tier, n=ev["problems_per_tier"], seed=ev["seed"])
        tiers[tier] = codex.passk_by_temperature(
            model,
            tok,
            problems,
            ev["n"],
            ev["temperatures"],
            max_new_tokens=ev["max_new_tokens"],
            rank_at=ev["rank_at"],
            seed=ev["seed"],
            programs_per_process=ev["programs_per_process"],
            progress=not ctx.quick,
        )
        print(tier, {T: row["pass@k"] for T, row in tiers[tier].items()}, flush=True)
    he = s["humaneval"]
    start = time.perf_counter()
    humaneval_problems = codex.load_humaneval()[: he["problems"] or None]
    humaneval = codex.passk_by_temperature(
        model,
        tok,
        humaneval_problems,
        he["n"],
        he["temperatures"],
        max_new_tokens=he["max_new_tokens"],
        seed=ev["seed"],
        programs_per_process=ev["programs_per_process"],
        progress=not ctx.quick,
    )
    print("humaneval", {T: row["pass@k"] for T, row in humaneval.items()}, flush=True)
    metrics = {
        "params": model.num_params(),
        "val_loss": history_last(result.history, "val_loss"),
        "train_chars": len(text),
        "train_s": train_s,
        "eval_s": ctx.elapsed() - train_s,
        "humaneval_s": time.perf_counter() - start,
        "tiers": tiers,
        "humaneval": humaneval,
        "eval": {
            **ev,
            "problems": {
                t: [
                    p.task_id
                    for p in codebench.test_problems(t, n=ev["problems_per_tier"], seed=ev["seed"])
                ]
                for t in codebench.TIERS
            },
        },
    }
    ctx.save(
        "codex/small",
        model=model,
        builder="gptlib.model:GPT.from_config",
        model_config=dataclasses.asdict(model.config),
        tokenizer=tok,
        metrics=metrics,
        history=result.history,
    )
