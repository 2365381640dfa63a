"""Exercise checkers for chapter 5 (GPT-2: zero-shot tasks, sampling, KV cache).

- :func:`check_min_p_filter`: a sampling filter relative to the most likely token;
- :func:`check_greedy_decode`: a greedy decoding loop that really uses the KV cache;
- :func:`check_answer_logprob`: scoring an answer by its log-likelihood (zero-shot by ranking).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from gptlib.checks import CheckFailed, _fail, check_close, checker  # noqa: F401

__all__ = ["check_min_p_filter", "check_greedy_decode", "check_answer_logprob"]


# ----------------------------------------------------------------------------- min-p


def _min_p_reference(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    probs = torch.softmax(logits.float(), dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


@checker
def check_min_p_filter(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> str:
    """Check ``fn(logits, min_p)``: keep tokens whose probability is at least ``min_p`` times
    the probability of the most likely token; set the other logits to ``-inf``."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 30, generator=g) * 2.0
    for min_p in (0.05, 0.2, 0.5):
        out = fn(logits.clone(), min_p)
        if not isinstance(out, torch.Tensor):
            _fail(f"min_p_filter returned {type(out).__name__}, expected a torch.Tensor of logits.")
        if out.shape != logits.shape:
            _fail(
                f"min_p_filter(logits of shape {tuple(logits.shape)}) "
                f"returned shape {tuple(out.shape)}.",
                "filter each row over the last dimension and keep the shape.",
            )
        expected = _min_p_reference(logits, min_p)
        kept, kept_ref = torch.isfinite(out), torch.isfinite(expected)
        if torch.equal(kept, kept_ref):
            if not torch.equal(out[kept], logits[kept]):
                _fail(
                    "the kept logits were changed.",
                    "a filter only removes tokens: keep the surviving logits exactly as they were.",
                )
            continue
        removed_as_zero = ((out == 0) & ~kept_ref).any()
        if removed_as_zero and not (~kept).any():
            _fail(
                "removed tokens have logit 0, not -inf: after "
                "the softmax they still get probability.",
                "use logits.masked_fill(mask, float('-inf')).",
            )
        probs = torch.softmax(logits, -1)
        absolute = logits.masked_fill(probs < min_p, float("-inf"))
        if torch.equal(kept, torch.isfinite(absolute)):
            _fail(
                f"with min_p={min_p} you kept the tokens with "
                f"probability >= {min_p}: an absolute threshold.",
                "min-p is relative: the threshold is min_p "
                "* (probability of the most likely token).",
            )
        on_logits = logits.masked_fill(
            logits < min_p * logits.max(-1, keepdim=True).values, float("-inf")
        )
        if torch.equal(kept, torch.isfinite(on_logits)):
            _fail(
                "you compared logits, not probabilities, with min_p times the maximum.",
                "turn the logits into probabilities with torch.softmax(logits, dim=-1) first.",
            )
        n_out, n_ref = kept.sum(-1).tolist(), kept_ref.sum(-1).tolist()
        _fail(
            f"with min_p={min_p} your filter keeps {n_out} tokens per row; expected {n_ref}.",
            "keep token i when softmax(logits)[i] >= min_p * softmax(logits).max() (per row).",
        )
    return "min_p_filter: correct."


# ----------------------------------------------------------------------------- greedy decoding with
# a KV cache


def _tiny_gpt(seed: int = 0):
    from gptlib.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=23, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()


@checker
def check_greedy_decode(fn: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]) -> str:
    """Check ``fn(model, idx, max_new_tokens)``: greedy decoding with ``model.new_kv_cache()``.

    The output must be the prompt followed by the greedy tokens, equal to
    ``gptlib.sampling.generate(..., greedy=True)``; after the first call the model must be fed
    one token at a time (that is what the cache is for).
    """
    from gptlib.sampling import generate

    model = _tiny_gpt()
    idx = torch.randint(0, 23, (3, 5), generator=torch.Generator().manual_seed(1))
    n = 12
    calls: list[int] = []
    hook = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[1]))
    try:
        out = fn(model, idx.clone(), n)
    except Exception as e:  # noqa: BLE001 - turned into a helpful message
        hook.remove()
        _fail(
            f"greedy_decode raised {type(e).__name__}: {e}",
            "prefill the cache with the prompt, then feed only the newest token: "
            "model(next_token[:, None], kv_cache=cache).",
        )
    hook.remove()
    expected = generate(model, idx, n, greedy=True, use_cache=False)
    if not isinstance(out, torch.Tensor):
        _fail(f"greedy_decode returned {type(out).__name__}, expected a tensor of token ids.")
    if out.shape != expected.shape:
        hint = (
            "return the prompt followed by the new tokens, (B, T + max_new_tokens)."
            if out.shape[-1] != expected.shape[-1]
            else None
        )
        _fail(f"output shape {tuple(out.shape)}, expected {tuple(expected.shape)}.", hint)
    if not torch.equal(out[:, : idx.shape[1]], idx):
        _fail("the output does not start with the prompt.", "concatenate the new tokens after idx.")
    if not torch.equal(out, expected):
        first = int((out != expected).any(0).nonzero()[0]) - idx.shape[1]
        _fail(
            f"the generated tokens differ from greedy decoding from new token {first} on.",
            "take logits[:, -1].argmax(-1) at each step; with a cache, feed only the newest token "
            "(its position is taken from the cache).",
        )
    if len(calls) > 1 and max(calls[1:]) > 1:
        _fail(
            "the tokens are right, but the model was called "
            f"with sequences of length {calls[:6]}...: "
            "the whole sequence is recomputed at every step.",
            "create cache = model.new_kv_cache(), call model(idx, kv_cache=cache) once, then "
            "model(next_token[:, None], kv_cache=cache) for each new token.",
        )
    return (
        "greedy_decode: same tokens as gptlib.sampling.generate, one token per step with the KV "
        "cache."
    )


# ----------------------------------------------------------------------------- answer log-
# probability


@checker
def check_answer_logprob(fn: Callable[..., float]) -> str:
    """Check ``fn(model, tokenizer, prompt, answer) -> log P(answer | prompt)`` (a float, <= 0)."""
    from gptlib.tasks import answer_logprob
    from gptlib.tokenizer import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefghijklmnopqrstuvw")
    model = _tiny_gpt(seed=3)
    cases = [("abc", "d"), ("reverse", "esrever"[:3]), ("hello", "world")]
    cases = [(p, a) for p, a in cases if all(ch in tokenizer.symbols for ch in p + a)]
    for prompt, answer in cases:
        got = fn(model, tokenizer, prompt, answer)
        try:
            got = float(got)
        except (TypeError, ValueError):
            _fail(f"answer_logprob returned {type(got).__name__}, expected a number.")
        want = answer_logprob(model, tokenizer, prompt, answer)
        if math.isclose(got, want, abs_tol=1e-4):
            continue
        if got > 0 and math.isclose(math.log(got), want, abs_tol=1e-4):
            _fail(
                f"for ({prompt!r}, {answer!r}) you returned "
                f"a probability ({got:.3g}), not its log.",
                "sum log-probabilities: torch.log_softmax(logits, -1).",
            )
        n = len(tokenizer.encode(answer))
        if n > 1 and math.isclose(got * n, want, abs_tol=1e-3):
            _fail(
                f"for ({prompt!r}, {answer!r}) you returned the mean log-probability per token.",
                "the probability of the whole answer is the product over its tokens: sum the logs.",
            )
        _fail(
            f"for ({prompt!r}, {answer!r}) you returned {got:.4f}; expected {want:.4f}.",
            "the logits at position t predict token t+1: the answer's first token is scored by the "
            "logits at the prompt's last position.",
        )
    return "answer_logprob: correct."
