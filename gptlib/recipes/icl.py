"""In-context learning (chapter 6): the k-shot model, the size sweep and the toy scaling fit.

``icl/kshot``: a two-layer attention-only transformer (:class:`gptlib.induction.AttnOnly`)
trained on episodes whose mapping is redrawn for every sequence (bare key-label pairs and the
assistant's intents by name, :data:`gptlib.icl.MIXTURE`), plus sequences of recurring random
tokens on which induction heads form; its history records k-shot accuracy as it trains.
``icl/sweep``: measurements only, models of several depths and widths on pairs episodes,
several seeds each: k-shot accuracy by size (the size axis of GPT-3's figure) and held-out
loss by parameter count (the scaling fit, with a band over seeds).
"""

from __future__ import annotations

import time

from gptlib.recipes.context import RecipeContext

PROBE_SHOTS = [0, 1, 2, 4, 8, 16]


def _train(settings: dict, mixture: dict, n_layer: int, n_embd: int, seed: int, quick: bool):
    """One attention-only model trained with AdamW at a constant rate; returns
    ``(model, history, wall_s)``. History entries: training loss and k-shot pairs accuracy."""
    import torch
    import torch.nn.functional as F

    from gptlib import icl, intents
    from gptlib.induction import AttnOnly, AttnOnlyConfig

    tokenizer = icl.icl_tokenizer()
    torch.manual_seed(seed)
    model = AttnOnly(
        AttnOnlyConfig(
            vocab_size=tokenizer.vocab_size,
            block_size=settings["block_size"],
            n_layer=n_layer,
            n_head=settings["n_head"],
            n_embd=n_embd,
            pos_init="normal",
            embed_std=settings["embed_std"],
        )
    )
    batches = icl.icl_batch_fn(
        tokenizer, settings["batch_size"], settings["block_size"], mixture, settings["recurring"]
    )
    shots = icl.shots_that_fit("pairs", settings["block_size"], PROBE_SHOTS)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=0.0, betas=(0.9, 0.98)
    )
    history, run_loss, count = [], 0.0, 0
    t0 = time.perf_counter()
    steps = settings["steps"]
    for step in range(steps + 1):
        if step % settings["eval_every"] == 0 or step == steps:
            entry = {"iter": step, "wall_s": time.perf_counter() - t0}
            if count:
                entry["loss"] = run_loss / count
            r = icl.kshot_accuracy(
                model, tokenizer, icl.FAMILIES["pairs"], shots, n=settings["probe_n"], seed=99
            )
            entry.update({f"pairs_{k}": r.at(k) for k in shots})
            if "intent names" in mixture and not quick:
                scores = intents.evaluate_intents(
                    model, tokenizer, [1], n=settings["probe_n"] // 2, seed=99, fmt="names"
                )[1]
                entry.update({f"intent_1_{key}": v for key, v in scores.items()})
            history.append(entry)
            run_loss, count = 0.0, 0
            print(
                f"[icl] {n_layer}x{n_embd} seed {seed} step {step} "
                f"({entry['wall_s']:.0f} s): loss {entry.get('loss', float('nan')):.3f}, "
                "k-shot pairs " + " ".join(f"{k}:{entry[f'pairs_{k}']:.2f}" for k in shots),
                flush=True,
            )
            if step == steps:
                break
        model.train()
        x, y = batches(g)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run_loss += loss.item()
        count += 1
    model.eval()
    return model, history, time.perf_counter() - t0, tokenizer


def run(ctx: RecipeContext) -> None:
    from dataclasses import asdict

    from gptlib import icl, intents
    from gptlib.evaluate import heldout_loss

    s = ctx.settings
    only = s.get("only") or None
    if only in (None, "icl/kshot"):
        k = s["kshot"]
        model, history, wall, tokenizer = _train(
            k, icl.MIXTURE, k["n_layer"], k["n_embd"], k["seed"], ctx.quick
        )
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
            if icl.shots_that_fit(name, k["block_size"])
        }
        shots_per_intent = [j for j in (0, 1, 2, 3) if 16 * j + 5 <= k["block_size"]]
        by_shots = intents.evaluate_intents(
            model, tokenizer, shots_per_intent, n=k["final_n"], seed=7, fmt="names"
        )
        metrics = {
            "params": model.num_params(),
            "steps": k["steps"],
            "kshot": {n: dict(zip(r.shots, r.accuracy)) for n, r in acc.items()},
            "chance": {n: r.chance for n, r in acc.items()},
            "intents": by_shots,
        }
        ctx.save(
            "icl/kshot",
            model=model,
            builder="gptlib.induction:AttnOnly.from_config",
            model_config=asdict(model.config),
            tokenizer=tokenizer,
            settings={**s, "only": "icl/kshot"},
            metrics=metrics,
            history=history,
            wall_s=wall,
        )
    if only in (None, "icl/sweep"):
        w = s["sweep"]
        runs = []
        for n_layer, n_embd in w["sizes"]:
            for seed in w["seeds"]:
                model, history, wall, tokenizer = _train(
                    w, {"pairs": 1.0}, n_layer, n_embd, seed, ctx.quick
                )
                r = icl.kshot_accuracy(
                    model, tokenizer, icl.FAMILIES["pairs"], w["shots"], n=w["final_n"], seed=7
                )
                batches = icl.icl_batch_fn(tokenizer, 16, w["block_size"], {"pairs": 1.0})
                loss = heldout_loss(model, batches, iters=w["loss_batches"], seed=2024)
                runs.append(
                    {
                        "n_layer": n_layer,
                        "n_embd": n_embd,
                        "seed": seed,
                        "params": model.num_params(),
                        "heldout_loss": loss,
                        "kshot": dict(zip(r.shots, r.accuracy)),
                        "n": r.n,
                        "wall_s": wall,
                        "history": history,
                    }
                )
                print(
                    f"[icl] sweep {n_layer}x{n_embd} seed {seed}: loss {loss:.3f}, "
                    f"k-shot {runs[-1]['kshot']} ({wall:.0f} s)",
                    flush=True,
                )
        ctx.save(
            "icl/sweep",
            settings={**s, "only": "icl/sweep"},
            metrics={
                "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
                "chance": icl.FAMILIES["pairs"].chance,
            },
            history={f"{r['n_layer']}x{r['n_embd']}/seed{r['seed']}": r["history"] for r in runs},
        )


__all__ = ["run"]
