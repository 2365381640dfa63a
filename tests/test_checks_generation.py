"""The chapter 5 checkers accept correct answers and reject typical wrong ones, helpfully."""
from __future__ import annotations

import pytest
import torch

from gptlib.checks import CheckFailed, check_answer_logprob, check_greedy_decode, check_min_p_filter

# ----------------------------------------------------------------------------- min-p


def good_min_p(logits, min_p):
    probs = torch.softmax(logits, dim=-1)
    keep = probs >= min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(~keep, float("-inf"))


def test_min_p_accepts_a_correct_filter():
    assert "correct" in check_min_p_filter(good_min_p)


def test_min_p_rejects_an_absolute_threshold():
    def absolute(logits, min_p):
        return logits.masked_fill(torch.softmax(logits, -1) < min_p, float("-inf"))

    with pytest.raises(CheckFailed, match="relative"):
        check_min_p_filter(absolute)


def test_min_p_rejects_comparing_logits():
    def on_logits(logits, min_p):
        return logits.masked_fill(logits < min_p * logits.max(-1, keepdim=True).values, float("-inf"))

    with pytest.raises(CheckFailed, match="probabilities"):
        check_min_p_filter(on_logits)


def test_min_p_rejects_zero_instead_of_minus_inf():
    def zeros(logits, min_p):
        probs = torch.softmax(logits, -1)
        return logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, 0.0)

    with pytest.raises(CheckFailed, match="-inf"):
        check_min_p_filter(zeros)


def test_min_p_rejects_changed_logits():
    def rescaled(logits, min_p):
        return good_min_p(logits, min_p) * 2

    with pytest.raises(CheckFailed, match="kept logits were changed"):
        check_min_p_filter(rescaled)


# ----------------------------------------------------------------------------- greedy decoding


def good_greedy(model, idx, max_new_tokens):
    cache = model.new_kv_cache()
    logits = model(idx, kv_cache=cache)
    out = idx
    for _ in range(max_new_tokens):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        logits = model(nxt, kv_cache=cache)
    return out


def test_greedy_accepts_a_cached_loop():
    assert "KV cache" in check_greedy_decode(good_greedy)


def test_greedy_rejects_a_loop_without_the_cache():
    def no_cache(model, idx, max_new_tokens):
        out = idx
        for _ in range(max_new_tokens):
            out = torch.cat([out, model(out)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return out

    with pytest.raises(CheckFailed, match="recomputed at every step"):
        check_greedy_decode(no_cache)


def test_greedy_rejects_feeding_everything_into_the_cache():
    def whole_sequence_into_cache(model, idx, max_new_tokens):
        cache = model.new_kv_cache()
        out = idx
        for _ in range(max_new_tokens):
            out = torch.cat([out, model(out, kv_cache=cache)[:, -1].argmax(-1, keepdim=True)], dim=1)
        return out

    with pytest.raises(CheckFailed) as err:
        check_greedy_decode(whole_sequence_into_cache)
    assert "newest token" in str(err.value)


def test_greedy_rejects_returning_only_new_tokens():
    def only_new(model, idx, max_new_tokens):
        return good_greedy(model, idx, max_new_tokens)[:, idx.shape[1]:]

    with pytest.raises(CheckFailed, match="prompt"):
        check_greedy_decode(only_new)


# ----------------------------------------------------------------------------- answer log-probability


def good_logprob(model, tokenizer, prompt, answer):
    p, a = tokenizer.encode(prompt), tokenizer.encode(answer)
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0], dim=-1)
    return sum(float(logp[len(p) - 1 + i, tok]) for i, tok in enumerate(a))


def test_logprob_accepts_a_correct_answer():
    assert "correct" in check_answer_logprob(good_logprob)


def test_logprob_rejects_off_by_one():
    def off_by_one(model, tokenizer, prompt, answer):
        p, a = tokenizer.encode(prompt), tokenizer.encode(answer)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + a]))[0], dim=-1)
        return sum(float(logp[len(p) + i, tok]) for i, tok in enumerate(a) if len(p) + i < logp.shape[0])

    with pytest.raises(CheckFailed, match="prompt's last position"):
        check_answer_logprob(off_by_one)


def test_logprob_rejects_a_probability():
    def probability(model, tokenizer, prompt, answer):
        return torch.tensor(good_logprob(model, tokenizer, prompt, answer)).exp().item()

    with pytest.raises(CheckFailed, match="not its log"):
        check_answer_logprob(probability)


def test_logprob_rejects_the_mean():
    def mean(model, tokenizer, prompt, answer):
        return good_logprob(model, tokenizer, prompt, answer) / len(tokenizer.encode(answer))

    with pytest.raises(CheckFailed, match="mean"):
        check_answer_logprob(mean)
