"""Benchmark byte-level BPE: training time on 1 MB of Shakespeare, and encoding throughput.

Usage::

    python benchmarks/bench_tokenizer.py [--megabytes 1] [--vocab-size 1000]

Trains on the first ``--megabytes`` MB of the corpus, then encodes the *next* MB (held-out
text) twice: "cold" with an empty pre-token cache, as a fresh tokenizer would, and "warm"
with the cache filled. Prints one markdown table row.
"""
from __future__ import annotations

import argparse
import platform
import time

from gptlib.data import shakespeare
from gptlib.tokenizer import ByteBPE, compression_ratio


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=1000)
    args = parser.parse_args()

    corpus = shakespeare()
    n = int(args.megabytes * 1_000_000)
    # The corpus is ASCII apart from a few dashes, so characters ~ bytes.
    train_text, held_out = corpus[:n], corpus[n : 2 * n]
    mb_held_out = len(held_out.encode("utf-8")) / 1e6

    tokenizer, train_s = _timed(ByteBPE.train, train_text, args.vocab_size)
    cold_tokenizer = ByteBPE(tokenizer.merges)  # same merges, empty encode cache
    ids, cold_s = _timed(cold_tokenizer.encode, held_out)
    _, warm_s = _timed(cold_tokenizer.encode, held_out)
    assert cold_tokenizer.decode(ids) == held_out, "round trip failed"

    print("| train text | vocab | train time | encode cold | encode warm "
          "| bytes/token (held out) | machine |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(train_text.encode('utf-8')) / 1e6:.1f} MB Shakespeare | {tokenizer.vocab_size} "
        f"| {train_s:.2f} s | {mb_held_out / cold_s:.1f} MB/s | {mb_held_out / warm_s:.1f} MB/s "
        f"| {compression_ratio(tokenizer, held_out):.2f} "
        f"| {platform.machine()}, Python {platform.python_version()} |"
    )


if __name__ == "__main__":
    main()
