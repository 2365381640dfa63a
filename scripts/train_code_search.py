"""Make chapter 10's shipped code-search encoders and its measured tables (assets/code_search).

    OMP_NUM_THREADS=1 python scripts/train_code_search.py --part main   # the shipped encoders + table (~14 min)
    OMP_NUM_THREADS=1 python scripts/train_code_search.py --part sweep  # batch-size sweep (~13 min)
    OMP_NUM_THREADS=1 python scripts/train_code_search.py --part text [--no-speakers]  # Shakespeare (~6 min)
    python scripts/train_code_search.py --part main --out /tmp/x --steps 600 --batch-size 32  # results_b32.json

(times: wall clock, one thread, on a shared and busy 2-core CPU; --part all runs main, sweep and text.)

Steps (all seeded; only training modules of the stdlib are ever trained on):
1. a byte-level BPE (1024 ids) on the training functions;
2. a small causal LM pre-trained on the training modules' source (next-token loss);
3. two contrastive encoders trained on (docstring summary, function) pairs with in-batch
   negatives: one from random weights, one initialised from the LM (cpt's recipe);
4. a batch-size sweep (random init, same number of steps, batch 8 / 32 / 128);
   and (``--part text``) an encoder on neighbouring Shakespeare speeches, batch 128;
5. the held-out code-search table (all test-module functions) for our two encoders, TF-IDF,
   BM25 and all-MiniLM-L6-v2, with CPU encoding times.
Writes <out>/random_init/, <out>/lm_init/ (save_encoder) and <out>/results*.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gptlib.data import encode_documents
from gptlib.device import describe, get_device, seed_everything
from gptlib.embeddings import (BM25Retriever, TfidfRetriever, _code_corpus, code_search_pairs, encode_texts,
                               encoder_from_lm, load_minilm, make_encoder, module_of, retrieval_metrics,
                               save_encoder, shakespeare_pairs, split_modules, train_contrastive)
from gptlib.model import GPT, GPTConfig
from gptlib.paths import ASSETS
from gptlib.tokenizer import ByteBPE
from gptlib.train import TrainConfig, train

#: The encoders' shape, shared by the chapter's live run.
MODEL = dict(block_size=128, n_layer=2, n_head=4, n_embd=64)
QUERY_LEN, CODE_LEN = 32, 64  # tokens kept of each docstring summary / function
TEXT_LEN = 48  # tokens kept of each speech
VOCAB = 1024


def train_encoder(encoder, tokenizer, train_pairs, val_pairs, steps, batch_size, device):
    return train_contrastive(encoder, tokenizer, [(p.query, p.code) for p in train_pairs],
                             [(p.query, p.code) for p in val_pairs], steps=steps, batch_size=batch_size,
                             x_len=QUERY_LEN, y_len=CODE_LEN, device=device)


def evaluate(encoder, tokenizer, test):
    t0 = time.perf_counter()
    codes = encode_texts(encoder.cpu(), tokenizer, [p.code for p in test], max_len=CODE_LEN)
    seconds = time.perf_counter() - t0
    queries = encode_texts(encoder, tokenizer, [p.query for p in test], max_len=QUERY_LEN)
    return retrieval_metrics(queries @ codes.T, torch.arange(len(test))), seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ASSETS / "code_search"))
    parser.add_argument("--part", choices=["main", "sweep", "text", "all"], default="all")
    parser.add_argument("--lm-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sweep-steps", type=int, default=300)
    parser.add_argument("--no-speakers", action="store_true", help="text part: drop the speakers' names")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or str(get_device())
    seed_everything(0)
    train_pairs, val_pairs = code_search_pairs("train"), code_search_pairs("val")
    test = code_search_pairs("test", max_pairs=1000)
    print(f"{len(train_pairs)} train / {len(val_pairs)} val / {len(test)} test pairs; {describe()}", flush=True)
    tokenizer = ByteBPE.train("\n".join(p.query + "\n" + p.code for p in train_pairs), VOCAB)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--out" in given:  # where the files go is not part of how they were made
        k = given.index("--out")
        del given[k:k + 2]
    command = "python scripts/train_code_search.py " + " ".join(given)
    common = dict(command=command.strip(), device=describe(), n_train=len(train_pairs), n_test=len(test),
                  query_len=QUERY_LEN, code_len=CODE_LEN)

    if args.part in ("sweep", "all"):
        sweep = {}
        for bs in (8, 32, 128):
            torch.manual_seed(0)
            enc = make_encoder(tokenizer.vocab_size, **MODEL)
            res = train_encoder(enc, tokenizer, train_pairs, val_pairs, args.sweep_steps, bs, device)
            metrics, _ = evaluate(enc, tokenizer, test)
            sweep[bs] = dict(metrics, seconds=res.elapsed_s, steps=args.sweep_steps)
            print("batch", bs, sweep[bs], flush=True)
        (out / "results_sweep.json").write_text(json.dumps(dict(common, sweep=sweep), indent=1))

    if args.part in ("text", "all"):
        # neighbouring speeches of Shakespeare (plays split into train / val): the text-pair analogue
        import random

        speakers = not args.no_speakers
        text_train, text_val = shakespeare_pairs("train", speakers=speakers), shakespeare_pairs("val", speakers=speakers)
        ev = random.Random(0).sample(text_val, min(1000, len(text_val)))
        torch.manual_seed(0)
        enc = make_encoder(tokenizer.vocab_size, **MODEL)
        res = train_contrastive(enc, tokenizer, text_train, text_val[:500], steps=args.sweep_steps, batch_size=128,
                                x_len=TEXT_LEN, y_len=TEXT_LEN, device=device)
        xs, ys = [a for a, _ in ev], [b for _, b in ev]
        targets = torch.arange(len(ev))
        x = encode_texts(enc.cpu(), tokenizer, xs, max_len=TEXT_LEN)
        y = encode_texts(enc, tokenizer, ys, max_len=TEXT_LEN)
        text = {"ours (random_init)": dict(retrieval_metrics(x @ y.T, targets), seconds=res.elapsed_s),
                "TF-IDF": retrieval_metrics(TfidfRetriever(ys).scores(xs), targets),
                "BM25": retrieval_metrics(BM25Retriever(ys).scores(xs), targets)}
        minilm = load_minilm("cpu")
        y_m = minilm.encode(ys, batch_size=32, normalize_embeddings=True, convert_to_tensor=True)
        x_m = minilm.encode(xs, batch_size=32, normalize_embeddings=True, convert_to_tensor=True)
        text["all-MiniLM-L6-v2"] = retrieval_metrics(x_m @ y_m.T, targets)
        for k, v in text.items():
            print(f"{k:>20}: " + ", ".join(f"{m} {x:.3f}" for m, x in v.items()), flush=True)
        name = "results_text.json" if speakers else "results_text_no_speakers.json"
        (out / name).write_text(json.dumps(dict(common, n_pairs=len(text_train), n_eval=len(ev), speakers=speakers,
                                                               steps=args.sweep_steps, batch_size=128,
                                                               text_len=TEXT_LEN, table=text), indent=1))

    if args.part in ("main", "all"):
        results = {}
        # 1. a small code LM, trained on the training modules' files only
        files = _code_corpus()
        split = split_modules([module_of(p) for p in files])
        lm_train = {p: s for p, s in files.items() if split[module_of(p)] == "train"}
        lm_val = {p: s for p, s in files.items() if split[module_of(p)] == "val"}
        lm_cfg = TrainConfig(max_iters=args.lm_steps, batch_size=16, block_size=MODEL["block_size"], lr=2e-3,
                             min_lr=2e-4, warmup_iters=50, eval_interval=max(args.lm_steps // 4, 1), eval_iters=8,
                             progress=False, device=device, out_dir=None)
        torch.manual_seed(0)
        lm = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **MODEL))
        lm_res = train(lm, lm_cfg, encode_documents(lm_train, tokenizer), encode_documents(lm_val, tokenizer))
        print(f"LM: val loss {lm_res.history[0].get('val_loss')} -> {lm_res.final_val_loss:.3f} "
              f"({lm_res.elapsed_s:.0f} s)", flush=True)
        lm_info = dict(steps=args.lm_steps, val_loss_start=lm_res.history[0].get("val_loss"),
                       val_loss=lm_res.final_val_loss, seconds=lm_res.elapsed_s)
        # 2. the two encoders, same data, same steps, same batch size
        for name in ("random_init", "lm_init"):
            torch.manual_seed(0)
            enc = make_encoder(tokenizer.vocab_size, **MODEL) if name == "random_init" else encoder_from_lm(lm)
            res = train_encoder(enc, tokenizer, train_pairs, val_pairs, args.steps, args.batch_size, device)
            metrics, seconds = evaluate(enc, tokenizer, test)
            results[name] = dict(metrics, encode_seconds=seconds)
            print(name, results[name], flush=True)
            save_encoder(out / name, enc, tokenizer,
                         meta=dict(common, steps=args.steps, batch_size=args.batch_size, lm=lm_info,
                                   history=res.history, train_seconds=res.elapsed_s, test=metrics))
        # 3. baselines on the same held-out set
        queries, codes = [p.query for p in test], [p.code for p in test]
        targets = torch.arange(len(test))
        results["tfidf"] = retrieval_metrics(TfidfRetriever(codes).scores(queries), targets)
        results["bm25"] = retrieval_metrics(BM25Retriever(codes).scores(queries), targets)
        minilm = load_minilm("cpu")
        t0 = time.perf_counter()
        c = minilm.encode(codes, batch_size=32, normalize_embeddings=True, convert_to_tensor=True)
        seconds = time.perf_counter() - t0
        q = minilm.encode(queries, batch_size=32, normalize_embeddings=True, convert_to_tensor=True)
        results["minilm"] = dict(retrieval_metrics(q @ c.T, targets), encode_seconds=seconds)
        for k, v in results.items():
            print(f"{k:>12}: " + ", ".join(f"{m} {x:.3f}" for m, x in v.items()), flush=True)
        (out / "results.json").write_text(json.dumps(dict(common, lm=lm_info, table=results), indent=1))


if __name__ == "__main__":
    main()
