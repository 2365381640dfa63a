"""Fill-in-the-middle: the left-to-right model, the FIM model (same tokens) and the edit model.

Both base models read the same functions of :mod:`gptlib.toycode` for the same number of
steps; the FIM model sees a share ``fim_rate`` of them cut at two random characters and
rearranged (PSM or SPM, ``spm_rate``), loss on all three parts. The edit model is the FIM
model fine-tuned on edits (:mod:`gptlib.edit`). The metrics chapter 9 quotes are measured
here on fresh functions (generator seeds other than the training seed) and stored in
``meta.json``.
"""

from __future__ import annotations

import time

from gptlib.recipes.context import RecipeContext
from gptlib.settings import SettingsError


def _train(model, data, settings: dict, seed: int, progress: bool):
    from gptlib.train import TrainConfig, train

    t = settings
    cfg = TrainConfig(
        max_iters=t["max_iters"],
        batch_size=t["batch_size"],
        block_size=t["block_size"],
        lr=t["lr"],
        min_lr=t["lr"] / 10,
        warmup_iters=t["warmup_iters"],
        eval_interval=10**9,
        eval_iters=1,
        log_interval=t["log_interval"],
        progress=progress,
        seed=seed,
        device=t["device"],
        out_dir=None,
        weight_decay=0.1,
    )
    return train(model, cfg, data, None)


def _curve(result) -> dict:
    its, losses = result.curve("train_loss")
    return {"iter": its, "train_loss": [round(v, 4) for v in losses]}


def _train_base(which: str, s: dict, progress: bool):
    """Train the ``which`` ("fim" or "l2r") model; for "fim" also the edit model from it.

    Runs in a worker process of its own (the two base models train side by side); returns
    state dicts and the training curves.
    """
    import torch

    from gptlib import fim
    from gptlib.device import seed_everything
    from gptlib.model import GPT, GPTConfig
    from gptlib.toycode import function_corpus

    torch.set_num_threads(1)
    tr = s["train"]
    tok = fim.fim_tokenizer()
    docs = [t.source for t in function_corpus(s["n_train"], s["seed"])]
    rate = s["fim_rate"] if which == "fim" else 0.0
    data = fim.build_stream(
        docs, tok, rate, epochs=s["epochs"], seed=s["seed"], unit=s["unit"], spm_rate=s["spm_rate"]
    )
    seed_everything(s["seed"])  # the same initial weights for both models
    model = GPT(GPTConfig(**s["_model_config"]))
    r = _train(model, data, tr, s["seed"] + 1, progress)
    out = {which: (r.model.state_dict(), _curve(r), r.iters, r.elapsed_s)}
    print(f"[fim] {which}: {r.iters} steps, {r.elapsed_s:.0f} s", flush=True)
    if which == "fim":
        out["edit"] = _train_edit(r.model, s, progress)
    return out


def _train_edit(base, s: dict, progress: bool):
    """Fine-tune a copy of the FIM model ``base`` on edits, with ``edit.block_size`` positions.

    Every training window starts at a document (:func:`gptlib.edit.edit_batches`), so the
    whole input is in view while the edited code is written. Returns the state dict, the
    curve, steps, seconds and the model config.
    """
    from gptlib import edit, fim

    ed = s["edit"]
    tok = fim.fim_tokenizer()
    model = edit.extend_positions(base, ed["block_size"]).train()
    examples = edit.edit_dataset(ed["n_edit"], seed=s["seed"])
    batches = edit.edit_batches(examples, tok, ed["block_size"], s["train"]["batch_size"])
    e = _train(model, batches, {**s["train"], **ed}, s["seed"] + 2, progress)
    print(f"[fim] edit: {e.iters} steps, {e.elapsed_s:.0f} s", flush=True)
    config = {k: getattr(model.config, k) for k in s["_model_config"]}
    return (e.model.state_dict(), _curve(e), e.iters, e.elapsed_s, config)


def _save_edit(ctx: RecipeContext, trained_edit, tasks) -> None:
    """Measure the edit model on held-out edits (functions it never saw) and save ``fim/edit``."""
    from gptlib import edit, fim
    from gptlib.model import GPT, GPTConfig

    s = ctx.settings
    state, curve, iters, train_s, config = trained_edit
    model = GPT(GPTConfig(**config))
    # measured with the weights as shipped (float16), so the chapter can reproduce each hit
    model.load_state_dict({k: v.half().float() for k, v in state.items()})
    model.eval()
    tok = fim.fim_tokenizer()
    train_sources = {t.source for t in tasks}
    held = edit.edit_dataset(s["edit"]["n_eval"], seed=s["eval"]["seed"] + 3, exclude=train_sources)
    start = time.perf_counter()
    outputs: list[str] = []
    scores = edit.evaluate_edits(model, tok, held, outputs=outputs)
    applied: dict[str, list[bool]] = {}
    for ex, out in zip(held, outputs):
        applied.setdefault(ex.kind, []).append(edit.edit_applied(ex, out))
    print(f"[fim] edit: exact match {scores}", flush=True)
    ctx.save(
        "fim/edit",
        model=model,
        builder="gptlib.model:GPT.from_config",
        model_config=config,
        tokenizer=tok,
        half=True,
        metrics={
            "exact_match": scores,
            "exact_match_ci95": {
                k: list(v) for k, v in edit.exact_match_ci95(held, outputs).items()
            },
            "applied": {k: sum(v) / len(v) for k, v in applied.items()},
            "hits": [int(out == ex.after) for ex, out in zip(held, outputs)],
            "n_eval": len(held),
            "n_eval_per_kind": {k: len(v) for k, v in applied.items()},
            "eval_seed": s["eval"]["seed"] + 3,
            "iters": iters,
            "train_s": train_s,
            "measure_s": time.perf_counter() - start,
            "block_size": config["block_size"],
            "params": model.num_params(),
        },
        history=curve,
    )


def run(ctx: RecipeContext) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from gptlib import fim
    from gptlib.model import GPT, GPTConfig
    from gptlib.toycode import function_corpus, make_hole

    s = ctx.settings
    ev = s["eval"]
    tok = fim.fim_tokenizer()
    model_config = {
        **s["model"],
        "vocab_size": tok.vocab_size,
        "block_size": s["train"]["block_size"],
    }
    job = {**s, "_model_config": model_config}
    if s["only"] == "fim/edit":  # remake the edit model alone, from the shipped FIM model
        from gptlib import assets

        try:
            base = assets.load("fim/fim", root=ctx.out).model
        except assets.AssetError as e:
            raise SettingsError(
                f"--only fim/edit fine-tunes the FIM model, which is missing ({e}); "
                "run 'python -m gptlib.recipes fim' first."
            ) from e
        _save_edit(
            ctx, _train_edit(base, job, not ctx.quick), function_corpus(s["n_train"], s["seed"])
        )
        return
    elif s["only"]:
        raise SettingsError(
            f"--only takes 'fim/edit' (or nothing, for all three), got {s['only']!r}."
        )
    trained: dict = {}
    if s["parallel"]:
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            for f in [pool.submit(_train_base, w, job, False) for w in ("fim", "l2r")]:
                trained.update(f.result())
    else:
        for w in ("fim", "l2r"):
            trained.update(_train_base(w, job, not ctx.quick))
    models: dict = {}
    for name in ("fim", "l2r"):
        state = trained[name][0]
        models[name] = GPT(GPTConfig(**model_config))
        models[name].load_state_dict(state)
        models[name].eval()
    tasks = function_corpus(s["n_train"], s["seed"])

    # The measurements chapter 9 quotes, on functions the models never saw.
    start = time.perf_counter()
    gaps = {}
    for mode in ("psm", "spm"):
        gaps[mode] = fim.compare_infilling(
            ev["n"], ev["seed"], mode=mode, models=models, tokenizer=tok, train_n=s["n_train"]
        )
    held = fim.held_out_tasks(ev["n_exec"], ev["seed"] + 1, s["n_train"], s["seed"])
    passed = {}
    for kind in ("bind", "body"):
        for how in ("fim", "l2r"):
            passed[f"{how}_{kind}"] = fim.pass_rate(
                models[how], tok, held, how, kind=kind, mode=ev["mode"]
            )
            if ev["sampled"]:
                passed[f"{how}_{kind}_sampled"] = fim.pass_rate(
                    models[how],
                    tok,
                    held,
                    how,
                    kind=kind,
                    mode=ev["mode"],
                    greedy=False,
                    seed=ev["seed"],
                )
    best = {}
    holes = [make_hole(t, "bind") for t in held[: ev["n_best"]]]
    for m in ev["best_of_m"]:
        runs = [fim.best_of_m(models["l2r"], tok, h, m, seed=i) for i, h in enumerate(holes)]
        best[str(m)] = {
            "exact": sum(r.fill == h.middle for r, h in zip(runs, holes)) / len(runs),
            "seconds_per_hole": sum(r.seconds for r in runs) / len(runs),
            "tokens_per_hole": sum(r.generated_tokens + r.scored_tokens for r in runs) / len(runs),
        }
    val_docs = [
        t.source
        for t in fim.held_out_tasks(ev["n_l2r_docs"], ev["seed"] + 2, s["n_train"], s["seed"])
    ]
    l2r_loss = {how: fim.left_to_right_loss(models[how], tok, val_docs) for how in ("fim", "l2r")}
    measured_s = time.perf_counter() - start
    main = gaps[ev["mode"]]
    shared = {
        "middle_nll_mode": ev["mode"],
        "middle_nll_fim": main["fim"],
        "middle_nll_fim_psm": gaps["psm"]["fim"],
        "middle_nll_fim_spm": gaps["spm"]["fim"],
        "middle_nll_l2r": main["l2r"],
        "middle_nll_gap": main["gap"],
        "middle_nll_gap_ci95": list(main["gap_ci95"]),
        "middle_nll_n": ev["n"],
        "middle_nll_seed": ev["seed"],
        "pass": passed,
        "best_of_m": best,
        "l2r_loss_fim": l2r_loss["fim"],
        "l2r_loss_l2r": l2r_loss["l2r"],
        "fim_for_free_ratio": l2r_loss["fim"] / l2r_loss["l2r"],
        "n_exec": len(held),
        "measure_s": measured_s,
    }
    for which in ("fim", "l2r"):
        _, curve, iters, train_s = trained[which]
        ctx.save(
            f"fim/{which}",
            model=models[which],
            builder="gptlib.model:GPT.from_config",
            model_config=model_config,
            tokenizer=tok,
            half=True,
            metrics={
                **shared,
                "params": models[which].num_params(),
                "iters": iters,
                "train_s": train_s,
                "fim_rate": s["fim_rate"] if which == "fim" else 0.0,
            },
            history=curve,
        )

    # Editing by instruction: the FIM model fine-tuned on edits of training functions.
    _save_edit(ctx, trained["edit"], tasks)
