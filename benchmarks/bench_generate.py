"""How much does the KV cache speed up generation?

Times greedy generation of N new tokens from a short random prompt, with and without the
KV cache, on a randomly initialised model (speed does not depend on the weights), and
prints one markdown table row.

    python benchmarks/bench_generate.py                      # CPU: 6x384 model, 256 tokens
    python benchmarks/bench_generate.py --device cuda        # GPU: GPT-2 124M, 512 tokens, bf16

Without a cache every step re-runs the model on the whole context, so the total work grows
with the square of the length; with the cache each step processes one token.
"""
from __future__ import annotations

import argparse
import time

import torch

from gptlib.device import autocast, describe, enable_tf32, get_device, seed_everything
from gptlib.model import GPT, GPTConfig
from gptlib.sampling import generate

SIZES = {
    # A GPT-2-shaped model small enough for a laptop CPU.
    "small": dict(n_layer=6, n_head=6, n_embd=384),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generation(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> float:
    """Milliseconds to generate ``new_tokens`` greedily (timed after the caller's warm-up)."""
    device = prompt.device
    _sync(device)
    start = time.perf_counter()
    with autocast(device):
        out = generate(model, prompt, new_tokens, greedy=True, use_cache=use_cache)
    _sync(device)
    assert out.size(1) == prompt.size(1) + new_tokens
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: best available")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="default: small on CPU, gpt2 on CUDA")
    parser.add_argument("--new-tokens", type=int, default=None, help="default: 256 on CPU, 512 on CUDA")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    on_gpu = device.type == "cuda"
    size = args.size or ("gpt2" if on_gpu else "small")
    new_tokens = args.new_tokens or (512 if on_gpu else 256)
    enable_tf32()
    seed_everything(0)

    config = GPTConfig.gpt2(**SIZES[size], block_size=1024, vocab_size=50257)
    if args.prompt_len + new_tokens > config.block_size:
        parser.error(f"prompt + new tokens must fit in block_size {config.block_size}")
    model = GPT(config).to(device).eval()
    prompt = torch.randint(0, config.vocab_size, (args.batch, args.prompt_len), device=device)

    for use_cache in (True, False):  # warm-up: kernels, allocator, autocast caches
        time_generation(model, prompt, 8, use_cache)
    ms_cache = time_generation(model, prompt, new_tokens, use_cache=True)
    ms_plain = time_generation(model, prompt, new_tokens, use_cache=False)

    precision = "bf16" if on_gpu else "fp32"
    params = f"{model.num_params(non_embedding=False) / 1e6:.0f}M"
    tokens_per_s = args.batch * new_tokens / (ms_cache / 1000)
    if args.header:
        print(f"<!-- {describe()} -->")
        print("| device | model | precision | new tokens | ms with cache | ms without | speed-up | tokens/s (cache) |")
        print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {device.type} | {size} ({config.n_layer}x{config.n_embd}, {params}) | {precision} | "
        f"{args.batch}x{new_tokens} | {ms_cache:.0f} | {ms_plain:.0f} | {ms_plain / ms_cache:.1f}x | {tokens_per_s:.0f} |"
    )


if __name__ == "__main__":
    main()
