"""How fast does gptlib train? Times full training steps and prints a markdown table row.

One step = forward, loss, backward, AdamW update: exactly what ``gptlib.train`` does per
iteration (without data loading, which is negligible here). The first ``--warmup`` steps
are not timed: they pay one-off costs (memory allocation, kernel selection, compilation).

    python benchmarks/bench_train.py                       # CPU, the ~0.8M-param tiny model
    python benchmarks/bench_train.py --hf                  # ... and the same model in transformers
    python benchmarks/bench_train.py --device cuda --preset gpt2-124m --compile --hf

MFU (model FLOPs utilisation) = achieved training FLOP/s / the hardware's peak, with the
FLOPs per token from ``GPT.estimate_flops_per_token`` (6N + 12LTd). Only meaningful on a
GPU, against ``--peak-tflops`` (989: an H100 SXM's dense bf16 peak; A100: 312).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch

from gptlib.device import autocast, enable_tf32, maybe_compile
from gptlib.model import GPT, GPTConfig, lm_loss

# name -> (GPTConfig fields, batch size). The tiny model is the CLI's shakespeare_char_tiny.
PRESETS: dict[str, tuple[dict, int]] = {
    "tiny": (dict(vocab_size=81, block_size=64, n_layer=4, n_head=4, n_embd=128), 12),
    "gpt2-124m": (dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768), 12),
}


@dataclass
class Timing:
    name: str
    params: int
    ms_per_iter: float
    tokens_per_sec: float


def hf_twin(config: GPTConfig) -> torch.nn.Module:
    """A randomly initialised ``transformers`` GPT-2 of the same size (nothing downloaded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_layer=config.n_layer,
        n_head=config.n_head, n_embd=config.n_embd, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(hf_config)


class Trainer:
    """One model with its optimizer and a fixed batch, ready to take timed training steps."""

    def __init__(self, name: str, model: torch.nn.Module, logits_of: Callable, batch: int,
                 block: int, vocab: int, device: torch.device, use_compile: bool) -> None:
        self.name, self.device = name, device
        self.params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        self.tokens = batch * block
        model = model.to(device).train()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1,
                                           fused=device.type == "cuda")
        self.forward = maybe_compile(model, use_compile)
        self.logits_of = logits_of
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab, (batch, block + 1), generator=g).to(device)
        self.inputs, self.targets = x[:, :-1], x[:, 1:]

    def step(self) -> None:
        with autocast(self.device):
            loss = lm_loss(self.logits_of(self.forward, self.inputs), self.targets)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def seconds_per_step(self, iters: int) -> float:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            self.step()
        sync()  # the GPU runs behind Python: wait for the last step to finish
        return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model size (default: tiny on CPU, gpt2-124m on CUDA)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--hf", action="store_true", help="also time transformers.GPT2LMHeadModel")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5; 15 with --compile)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default 30 on CPU, 50 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the best one counts")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="hardware peak for MFU")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = args.preset or ("gpt2-124m" if device.type == "cuda" else "tiny")
    fields, batch = PRESETS[preset]
    batch = args.batch_size or batch
    warmup = args.warmup if args.warmup is not None else (15 if args.compile else 5)
    iters = args.iters or (50 if device.type == "cuda" else 30)
    if device.type == "cuda":
        enable_tf32()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = GPTConfig.gpt2(**fields, dropout=0.0)
    block, vocab = config.block_size, config.vocab_size
    torch.manual_seed(0)
    ours = GPT(config)
    flops_per_token = ours.estimate_flops_per_token(block)
    trainers = [Trainer("gptlib", ours, lambda m, x: m(x), batch, block, vocab, device, args.compile)]
    if args.hf:
        torch.manual_seed(0)
        trainers.append(Trainer("transformers", hf_twin(config), lambda m, x: m(input_ids=x).logits,
                                batch, block, vocab, device, args.compile))
    for trainer in trainers:
        for _ in range(warmup):
            trainer.step()
    # Alternate between the models in several rounds and keep each one's best round: on a
    # shared machine, background load then slows both alike instead of favouring one.
    best = {t.name: float("inf") for t in trainers}
    for _ in range(args.rounds):
        for trainer in trainers:
            best[trainer.name] = min(best[trainer.name], trainer.seconds_per_step(iters // args.rounds or 1))
    runs = [Timing(t.name, t.params, 1000 * best[t.name], t.tokens / best[t.name]) for t in trainers]

    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)}), bf16"
    else:
        n = torch.get_num_threads()
        where = f"cpu ({n} thread{'s' if n != 1 else ''})"
    where += ", compiled" if args.compile else ""
    print(f"torch {torch.__version__}; {warmup} warm-up steps, then the best of {args.rounds} rounds "
          f"of {iters // args.rounds or 1} timed steps; step = forward + backward + AdamW\n")
    print("| device | model | params | B | T | ms/iter | steps/s | tokens/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        mfu = (f"{100 * flops_per_token * r.tokens_per_sec / (args.peak_tflops * 1e12):.1f}%"
               if device.type == "cuda" else "-")
        print(f"| {where} | {r.name} {preset} | {r.params / 1e6:.2f}M | {batch} | {block} | "
              f"{r.ms_per_iter:.1f} | {1000 / r.ms_per_iter:.1f} | {r.tokens_per_sec:,.0f} | {mfu} |")
    if args.hf:
        print(f"\ngptlib / transformers speed: {runs[0].tokens_per_sec / runs[1].tokens_per_sec:.2f}x")


if __name__ == "__main__":
    main()
