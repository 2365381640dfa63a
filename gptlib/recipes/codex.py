"""Chapter 8's code model ``codex/small`` and its pass@k measurements.

Trains a character GPT-2 on problems composed from primitives (:mod:`gptlib.codebench`,
training templates only; one problem per row, its prompt at position 0, as
:func:`gptlib.codex.problem_batches` explains), then samples ``n`` completions per test
problem of every tier at several temperatures, judges them (:mod:`gptlib.verdict`), and
stores per-problem counts, pass@k, and the pass of the sample ranked first by mean
log-probability. How well the model copies the docstring's constants into the body is
measured too (``body_nll``), and HumanEval is scored for scale. Everything lands in the
asset's ``meta["metrics"]``.
"""

from __future__ import annotations

import dataclasses
import time

from gptlib.recipes.context import RecipeContext


def run(ctx: RecipeContext) -> None:
    from gptlib import codebench, codex
    from gptlib.device import seed_everything
    from gptlib.train import TrainConfig, build_model, history_last, train

    s = ctx.settings
    if s["extend"]:
        return _extend(ctx)
    seed_everything(s["seed"])
    tok = codex.code_tokenizer()
    train_set = codebench.train_problems(s["data"]["problems"], seed=s["data"]["seed"])
    split = int(0.95 * len(train_set))
    cfg = TrainConfig.from_dict({**s["train"], "out_dir": None, "progress": not ctx.quick})

    def batches(part):
        return codex.problem_batches(
            part, tok, cfg.batch_size, cfg.block_size, offset_share=s["data"]["offset_share"]
        )

    model = build_model(cfg, tok.vocab_size)
    result = train(model, cfg, batches(train_set[:split]), batches(train_set[split:]))
    model = result.model.eval()
    train_s = ctx.elapsed()
    ev = s["eval"]
    nll = {
        tier: codex.constant_nll(model, tok, codebench.test_problems(tier, n=30, seed=ev["seed"]))
        for tier in codebench.TIERS
    }
    print("body NLL (nats/char):", nll, flush=True)

    tiers = {tier: _measure_tier(model, tok, tier, ev, not ctx.quick) for tier in codebench.TIERS}
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
        "train_chars": sum(len(p.prompt) + len(p.canonical_solution) for p in train_set),
        "body_nll": nll,
        "train_s": train_s,
        "eval_s": ctx.elapsed() - train_s,
        "humaneval_s": time.perf_counter() - start,
        "tiers": tiers,
        "humaneval": humaneval,
        "eval": {
            **ev,
            "problems": {
                t: [p.task_id for p in _tier_problems(t, ev)] for t in codebench.TIERS
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


def _tier_problems(tier: str, ev: dict) -> list:
    from gptlib import codebench

    return codebench.test_problems(tier, n=ev["problems_per_tier"], seed=ev["seed"])


def _measure_tier(model, tok, tier: str, ev: dict, progress: bool, only=None) -> dict:
    """pass@k (and ranked picks) of one tier at the temperatures of ``ev`` (``only``: just
    those, see :func:`gptlib.codex.passk_by_temperature`)."""
    from gptlib import codex

    rows = codex.passk_by_temperature(
        model,
        tok,
        _tier_problems(tier, ev),
        ev["n"],
        ev["temperatures"],
        max_new_tokens=ev["max_new_tokens"],
        rank_at=ev["rank_at"],
        seed=ev["seed"],
        programs_per_process=ev["programs_per_process"],
        progress=progress,
        only=only,
    )
    print(tier, {T: row["pass@k"] for T, row in rows.items()}, flush=True)
    return rows


def _extend(ctx: RecipeContext) -> None:
    """``--extend true``: measure on the existing ``codex/small`` the temperatures (and the
    ranked picks) in the settings that its metrics lack; every other number is kept.

    The i-th temperature samples with seed ``eval.seed + i`` whatever else is measured, so
    the added rows are what the whole recipe gives for them, on the same model (training is
    deterministic with one thread). ``meta.json`` keeps the whole recipe's command.
    """
    from gptlib import assets, codebench

    s, ev = ctx.settings, ctx.settings["eval"]
    old = assets.load("codex/small", root=ctx.root_of("codex/small"))

    def measured_alike(settings: dict) -> dict:  # all but what --extend may add to
        return {**{k: v for k, v in settings.items() if k != "extend"},
                "eval": {k: v for k, v in settings["eval"].items()
                         if k not in ("temperatures", "rank_at")}}

    if measured_alike(old.meta["settings"]) != measured_alike(s):
        raise ValueError("--extend adds temperatures to codex/small as it was measured; these "
                         "settings differ from its own in more than eval.temperatures and "
                         "eval.rank_at: run the whole recipe instead")
    metrics = dict(old.meta["metrics"])
    tiers = {tier: dict(rows) for tier, rows in metrics["tiers"].items()}
    added: dict[str, list[float]] = {}
    for tier in codebench.TIERS:
        todo = [T for T in ev["temperatures"] if str(T) not in tiers[tier]
                or (T in ev["rank_at"] and "ranked" not in tiers[tier][str(T)])]
        if not todo:
            continue
        tiers[tier].update(_measure_tier(old.model, old.tokenizer, tier, ev, not ctx.quick,
                                         only=todo))
        tiers[tier] = {str(T): tiers[tier][str(T)] for T in ev["temperatures"]}
        added[tier] = todo
    metrics["tiers"] = tiers
    metrics["eval"] = {**metrics["eval"], "temperatures": ev["temperatures"],
                       "rank_at": ev["rank_at"]}
    metrics["extended"] = [*metrics.get("extended", []),
                           {"command": ctx.command, "temperatures": added,
                            "wall_s": round(ctx.elapsed(), 1)}]
    path = assets.save(
        "codex/small", command=old.meta["command"], root=ctx.out,
        settings={**s, "extend": False}, metrics=metrics,
        history=old.meta["history"], wall_s=old.meta["wall_s"] + ctx.elapsed(),
        model=old.model, builder=old.meta["model"]["builder"],
        model_config=old.meta["model"]["config"], tokenizer=old.tokenizer)
    print(f"[codex] wrote {path}", flush=True)
