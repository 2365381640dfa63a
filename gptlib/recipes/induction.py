"""Induction heads (chapter 6): attention-only transformers, 1 and 2 layers, on recurring segments.

Both models see the same data (:func:`gptlib.induction.recurring_batch`) for the same steps; the
history records the loss on repeated tokens, the loss on the first and second copy of a random
sequence, the best induction score of the last layer and the best previous-token score of
layer 0, so the chapter can plot the phase change of the two-layer model and the flat control.
"""

from __future__ import annotations

from gptlib.recipes.context import RecipeContext


def run(ctx: RecipeContext) -> None:
    import torch

    from gptlib import induction
    from gptlib.tokenizer import IdTokenizer

    s = ctx.settings
    only = s.get("only") or None
    for n_layer in s["layers"]:
        name = f"icl/induction-{n_layer}layer"
        if only and name != only:
            continue
        config = dict(
            vocab_size=s["vocab_size"],
            block_size=s["block_size"],
            n_layer=n_layer,
            n_head=s["n_head"],
            n_embd=s["n_embd"],
            pos_init=s["pos_init"],
            embed_std=s["embed_std"],
        )
        torch.manual_seed(s["seed"])
        model = induction.AttnOnly.from_config(config)
        out = induction.train_attn_only(
            model,
            steps=s["steps"],
            lr=s["lr"],
            batch_size=s["batch_size"],
            min_len=s["min_len"],
            max_len=s["max_len"],
            copies=s["copies"],
            fill=s["fill"],
            warmup=s["warmup"],
            eval_every=s["eval_every"],
            seed=s["seed"],
            progress=not ctx.quick,
        )
        losses = induction.copy_losses(model, length=20, n_seq=256, seed=123)
        scores = induction.head_scores(model, length=20, n_seq=64, seed=123)
        metrics = {
            "copy1_loss": losses["first"],
            "copy2_loss": losses["second"],
            "uniform_loss": losses["uniform"],
            "params": model.num_params(),
            "induction_scores": scores["induction"].tolist(),
            "previous_scores": scores["previous"].tolist(),
            "phase_change_step": induction.phase_change_step(out["history"]),
            "steps": s["steps"],
        }
        ctx.save(
            name,
            model=model,
            builder="gptlib.induction:AttnOnly.from_config",
            model_config=config,
            tokenizer=IdTokenizer(s["vocab_size"]),
            settings={**s, "only": name},
            metrics=metrics,
            history=out["history"],
            wall_s=out["wall_s"],
        )
