"""The teaching encoder of chapter 10, trained from scratch: a 2-layer GPT body, mean pooling,
symmetric InfoNCE with in-batch negatives, on the stdlib's (docstring, function) pairs, reading
the same text as every other system. A batch-size sweep at an *equal number of pairs seen*
(batch 8, 32, 128): what a larger batch buys beyond seeing more data. Writes
``embeddings/scratch`` (the largest batch's encoder) and ``embeddings/batch-sweep``.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from gptlib.recipes.context import RecipeContext


def run(ctx: RecipeContext) -> None:
    from gptlib.codesearch import code_search_pairs, outside_test_pairs
    from gptlib.embeddings import encode_texts, make_encoder, train_contrastive
    from gptlib.retrieval import retrieval_metrics
    from gptlib.tokenizer import ByteBPE

    s = ctx.settings
    m = s["model"]
    train = code_search_pairs("train", max_pairs=s["max_train"] or None)
    val = code_search_pairs("val", max_pairs=s["max_val"] or None)
    tests = {"test": code_search_pairs("test", max_pairs=s["max_test"] or None),
             "ood": outside_test_pairs(n=s["n_outside"], packages=s["packages"])}
    t0 = time.perf_counter()
    tokenizer = ByteBPE.train("\n".join(p.query + "\n" + p.code for p in train), s["vocab_size"])
    bpe_s = time.perf_counter() - t0
    tr = [(p.query, p.code) for p in train]
    va = [(p.query, p.code) for p in val]
    sweep, history, shipped = {}, {}, None
    for bs in sorted(s["batch_sizes"], reverse=True):
        steps = max(1, s["pairs_seen"] // bs)
        torch.manual_seed(s["seed"])
        enc = make_encoder(tokenizer.vocab_size, block_size=m["block_size"], n_layer=m["n_layer"],
                           n_head=m["n_head"], n_embd=m["n_embd"])
        res = train_contrastive(enc, tokenizer, tr, va, steps=steps, batch_size=bs,
                                x_len=s["query_len"], y_len=s["code_len"], lr=s["lr"],
                                device="cpu")
        row = {"steps": steps, "pairs_seen": steps * bs, "train_seconds": res.elapsed_s}
        for split, ps in tests.items():
            q = encode_texts(enc, tokenizer, [p.query for p in ps], max_len=s["query_len"])
            c = encode_texts(enc, tokenizer, [p.code for p in ps], max_len=s["code_len"])
            row[split] = retrieval_metrics(q @ c.T, torch.arange(len(ps)))
        sweep[str(bs)] = row
        history[str(bs)] = res.history
        if shipped is None:  # the largest batch is shipped
            shipped = (enc, res, bs)
        print(f"batch {bs}: {steps} steps, test MRR {row['test']['MRR']:.3f}, "
              f"outside MRR {row['ood']['MRR']:.3f} ({res.elapsed_s:.0f} s)", flush=True)
    enc, res, bs = shipped
    config = {"gpt": dataclasses.asdict(enc.config), "pool": enc.pool,
              "query_len": s["query_len"], "code_len": s["code_len"]}
    ctx.save("embeddings/scratch", model=enc,
             builder="gptlib.embeddings:ContrastiveEncoder.from_config",
             model_config=config, tokenizer=tokenizer,
             metrics={**sweep[str(bs)], "batch_size": bs, "n_train": len(train),
                      "params": sum(p.numel() for p in enc.parameters()), "bpe_seconds": bpe_s},
             history=res.history, half=True)
    ctx.save("embeddings/batch-sweep", metrics={"sweep": sweep, "pairs_seen": s["pairs_seen"]},
             history=history)
