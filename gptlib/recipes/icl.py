"""In-context learning (chapter 6): the k-shot model, the size sweep and the toy scaling fit.

``icl/kshot``: a small GPT trained on episodes whose mapping is redrawn for every sequence
(single-letter lookup and the assistant's intents, :data:`gptlib.icl.MIXTURE`); its history
records k-shot accuracy as it trains. ``icl/sweep``: measurements only, models of several depths
and widths on lookup episodes, several seeds each: k-shot accuracy by size (the size axis of
GPT-3's figure) and held-out loss by parameter count (the scaling fit, with a band over seeds).
"""

from __future__ import annotations

import dataclasses

from gptlib.recipes.context import RecipeContext

KSHOT_PROBE = [0, 1, 2, 4, 8]


def _train(settings: dict, mixture: dict, n_layer: int, n_embd: int, seed: int, quick: bool):
    """One GPT trained on ``mixture`` episodes; history entries carry k-shot lookup accuracy."""
    from gptlib import icl, intents
    from gptlib.model import GPT
    from gptlib.train import TrainConfig, train

    tokenizer = icl.icl_tokenizer()
    cfg = TrainConfig(
        max_iters=settings["steps"],
        batch_size=settings["batch_size"],
        block_size=settings["block_size"],
        lr=settings["lr"],
        min_lr=settings["lr"] / 10,
        warmup_iters=settings["warmup"],
        weight_decay=0.0,
        grad_clip=1.0,
        eval_interval=settings["eval_every"],
        eval_iters=settings["eval_iters"],
        log_interval=settings["eval_every"],
        progress=False,
        seed=seed,
        device="cpu",
    )
    model_config = dict(
        vocab_size=tokenizer.vocab_size,
        block_size=settings["block_size"],
        n_layer=n_layer,
        n_head=settings["n_head"],
        n_embd=n_embd,
        dropout=0.0,
    )
    import torch

    torch.manual_seed(seed)
    model = GPT.from_config(model_config)
    if settings.get("pos_init", "normal") == "sinusoidal":
        from gptlib.induction import sinusoids

        # learned positions that start as the original Transformer's sinusoids (scaled to the
        # token embeddings): "one step back" is one linear map everywhere, so the heads that
        # look a fixed distance back, which the lookup circuit needs, are quick to find
        with torch.no_grad():
            model.wpe.weight.copy_(sinusoids(*model.wpe.weight.shape) * 0.02 * 2**0.5)
    if settings.get("embed_std"):
        # unit-scale embeddings let attention sharpen from the first steps (see
        # gptlib.induction.AttnOnlyConfig.embed_std): the lookup circuit forms far sooner
        with torch.no_grad():
            torch.nn.init.normal_(model.wte.weight, std=settings["embed_std"])
            torch.nn.init.normal_(model.wpe.weight, std=settings["embed_std"])
    batches = icl.icl_batch_fn(tokenizer, cfg.batch_size, cfg.block_size, mixture)
    shots = [k for k in KSHOT_PROBE if 4 * (k + 1) + 1 <= settings["block_size"]]

    def probe(entry: dict) -> None:
        if "val_loss" not in entry:
            return
        r = icl.kshot_accuracy(
            model, tokenizer, icl.FAMILIES["lookup"], shots, n=settings["probe_n"], seed=99
        )
        entry.update({f"lookup_{k}": r.at(k) for k in shots})
        if "intent" in mixture and not quick:
            scores = intents.evaluate_intents(
                model, tokenizer, [1], n=settings["probe_n"] // 2, seed=99
            )[1]
            entry.update({f"intent_1_{key}": v for key, v in scores.items()})
        print(
            f"[icl] {n_layer}x{n_embd} seed {seed} step {entry['iter']}: val loss "
            f"{entry['val_loss']:.3f}, k-shot lookup "
            + " ".join(f"{k}:{entry[f'lookup_{k}']:.2f}" for k in shots),
            flush=True,
        )

    result = train(model, cfg, batches, batches, callback=probe)
    return result, model_config, tokenizer


def run(ctx: RecipeContext) -> None:
    from gptlib import icl, intents
    from gptlib.evaluate import heldout_loss
    from gptlib.train import history_last

    s = ctx.settings
    only = s.get("only") or None
    if only in (None, "icl/kshot"):
        k = s["kshot"]
        mixture = {"lookup": 1.0} if k.get("lookup_only") else icl.MIXTURE
        result, config, tokenizer = _train(
            k, mixture, k["n_layer"], k["n_embd"], k["seed"], ctx.quick
        )
        model = result.model
        acc = {
            name: icl.kshot_accuracy(
                model,
                tokenizer,
                icl.FAMILIES[name],
                icl.shots_that_fit(name, k["block_size"]),
                n=k["final_n"],
                seed=7,
            )
            for name in icl.FAMILIES
        }
        by_shots = intents.evaluate_intents(
            model,
            tokenizer,
            [0, 1, 2] if k["block_size"] >= 128 else [0, 1],
            n=k["final_n"],
            seed=7,
        )
        metrics = {
            "val_loss": history_last(result.history, "val_loss"),
            "params": model.num_params(),
            "steps": result.iters,
            "kshot": {n: dict(zip(r.shots, r.accuracy)) for n, r in acc.items()},
            "chance": {n: r.chance for n, r in acc.items()},
            "intents": by_shots,
        }
        ctx.save(
            "icl/kshot",
            model=model,
            builder="gptlib.model:GPT.from_config",
            model_config=config,
            tokenizer=tokenizer,
            settings={**s, "only": "icl/kshot"},
            metrics=metrics,
            history=result.history,
            wall_s=result.elapsed_s,
        )
    if only in (None, "icl/sweep"):
        w = s["sweep"]
        runs = []
        for n_layer, n_embd in w["sizes"]:
            for seed in w["seeds"]:
                result, config, tokenizer = _train(
                    w, {"lookup": 1.0}, n_layer, n_embd, seed, ctx.quick
                )
                model = result.model
                r = icl.kshot_accuracy(
                    model, tokenizer, icl.FAMILIES["lookup"], w["shots"], n=w["final_n"], seed=7
                )
                batches = icl.icl_batch_fn(tokenizer, 16, w["block_size"], {"lookup": 1.0})
                loss = heldout_loss(model, batches, iters=w["loss_batches"], seed=2024)
                runs.append(
                    {
                        "n_layer": n_layer,
                        "n_embd": n_embd,
                        "seed": seed,
                        "params": model.num_params(),
                        "heldout_loss": loss,
                        "kshot": dict(zip(r.shots, r.accuracy)),
                        "wall_s": result.elapsed_s,
                        "history": [
                            {
                                key: e[key]
                                for key in e
                                if key == "iter" or key.startswith("lookup_") or key == "val_loss"
                            }
                            for e in result.history
                            if "val_loss" in e
                        ],
                    }
                )
                print(
                    f"[icl] sweep {n_layer}x{n_embd} seed {seed}: loss {loss:.3f}, "
                    f"k-shot {runs[-1]['kshot']} ({result.elapsed_s:.0f} s)",
                    flush=True,
                )
        ctx.save(
            "icl/sweep",
            settings={**s, "only": "icl/sweep"},
            metrics={
                "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
                "chance": icl.FAMILIES["lookup"].chance,
            },
            history={f"{r['n_layer']}x{r['n_embd']}/seed{r['seed']}": r["history"] for r in runs},
        )


__all__ = ["run", "dataclasses"]
