"""Character GPTs pre-trained on Shakespeare: GPT-1 (chapter 4) and the GPT-2 task family (chapter
5).

Every model is one run of :func:`gptlib.train.train` on the settings of one ``[models.NAME]``
table (the train CLI's keys: ``max_iters``, ``lr``, ``[model]``, ``[data]``...), written as
the asset ``NAME``. ``--only gpt2/tasks-small`` trains one of them.
"""

from __future__ import annotations

import dataclasses

from gptlib.recipes.context import RecipeContext


def run(ctx: RecipeContext) -> None:
    from gptlib.data import train_val_tokens
    from gptlib.train import TrainConfig, build_model, history_last, train

    only = ctx.settings.get("only") or None
    for name, table in ctx.settings["models"].items():
        if only and name != only:
            continue
        cfg = TrainConfig.from_dict({**table, "out_dir": None, "progress": not ctx.quick})
        tokenizer, train_ids, val_ids = train_val_tokens(**cfg.data)
        model = build_model(cfg, tokenizer.vocab_size)
        result = train(model, cfg, train_ids, val_ids)
        ctx.save(
            name,
            model=result.model,
            builder="gptlib.model:GPT.from_config",
            model_config=dataclasses.asdict(result.model.config),
            tokenizer=tokenizer,
            settings={**ctx.settings, "models": {name: cfg.to_dict()}},
            metrics={
                "val_loss": history_last(result.history, "val_loss"),
                "params": result.model.num_params(),
                "iters": result.iters,
                "tokens_per_sec": result.tokens_per_sec,
            },
            history=result.history,
            wall_s=result.elapsed_s,
        )
