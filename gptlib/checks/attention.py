"""Exercise checkers for chapters 1-2 (attention, the Transformer block).

Chapter 1 (from RNNs to attention):

- :func:`check_attention_weights`: softmax(q k^T / sqrt(d)) with a boolean mask;
- :func:`check_gru_step`: one GRU step from the weights of a ``torch.nn.GRU``;
- :func:`check_query_focus`: a hand-made query that puts most attention on a chosen word.

Chapter 2 (the Transformer block):

- :func:`check_block_params`: the parameter count of one block, as a formula of its width;
- :func:`check_layer_norm`: layer normalisation over the last dimension;
- :func:`check_mlm_masking`: BERT's 15% / 80-10-10 corruption rule.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from gptlib.checks import CheckFailed, _fail, check_close, checker  # noqa: F401

__all__ = [
    "check_attention_entropy",
    "check_attention_weights",
    "check_gru_step",
    "check_query_focus",
    "check_block_params",
    "check_layer_norm",
    "check_mlm_masking",
]


def _as_tensor(out, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        _fail(
            f"{what} returned {type(out).__name__}, expected a torch.Tensor.",
            "return a tensor (if you return a tuple, return only the part asked for).",
        )
    return out


# ----------------------------------------------------------------------------- chapter 1


def _weights_reference(q, k, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


@checker
def check_attention_weights(fn: Callable[..., torch.Tensor]) -> str:
    """Check ``fn(q, k, mask=None) -> softmax(q k^T / sqrt(d))`` with masked pairs at weight 0."""
    g = torch.Generator().manual_seed(0)
    # Tq != Tk and d != Tk, so that mixing up dimensions shows as a shape error.
    q = torch.randn(2, 3, 5, 8, generator=g) * 2
    k = torch.randn(2, 3, 7, 8, generator=g) * 2
    out = _as_tensor(fn(q.clone(), k.clone()), "attention_weights(q, k)")
    expected = _weights_reference(q, k)
    if out.shape != expected.shape:
        _fail(
            f"attention_weights(q, k) with q {tuple(q.shape)}, k {tuple(k.shape)} has shape "
            f"{tuple(out.shape)}, expected {tuple(expected.shape)} (..., Tq, Tk).",
            "scores = q @ k.transpose(-2, -1): one row per query, one column per key.",
        )
    sums = out.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        _fail(
            "the rows of the weights do not sum to 1.",
            "apply the softmax over the keys: torch.softmax(scores, dim=-1).",
        )
    unscaled = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
    if torch.allclose(out, unscaled, atol=1e-5):
        _fail(
            "the weights equal softmax(q k^T): the scores were not divided by sqrt(d).",
            "divide the scores by math.sqrt(q.size(-1)) before the softmax.",
        )
    by_d = torch.softmax(q @ k.transpose(-2, -1) / q.size(-1), dim=-1)
    if torch.allclose(out, by_d, atol=1e-5):
        _fail("the scores were divided by d, not by sqrt(d).", "use math.sqrt(q.size(-1)).")
    check_close(out, expected, "attention weights without a mask", atol=1e-5)

    mask = torch.rand(5, 7, generator=g) > 0.4
    mask[:, 0] = True  # every query keeps at least one key
    out_m = _as_tensor(fn(q.clone(), k.clone(), mask), "attention_weights(q, k, mask)")
    if out_m.shape != expected.shape:
        _fail(
            f"with a mask the weights have shape {tuple(out_m.shape)}, "
            f"expected {tuple(expected.shape)}."
        )
    leaked = out_m.masked_select(~mask.expand_as(out_m)).abs().max().item()
    if leaked > 1e-6:
        inverted = _weights_reference(q, k, ~mask | (mask.sum(-1, keepdim=True) == mask.size(-1)))
        hint = (
            "mask is True where a query MAY attend: fill the scores where it is False, "
            "scores.masked_fill(~mask, float('-inf'))"
        )
        if torch.isfinite(out_m).all() and torch.allclose(out_m, inverted, atol=1e-4):
            hint = "you inverted the mask. " + hint
        _fail(
            f"pairs where mask is False get weight up to {leaked:.3g}; they must get exactly 0.",
            hint,
        )
    check_close(
        out_m,
        _weights_reference(q, k, mask),
        "attention weights with a mask",
        atol=1e-5,
        hint="set masked scores to -inf *before* the softmax, so the other weights still sum to 1.",
    )
    return "attention_weights: correct, with and without a mask."


def _gru_parts(x_t, h, gru):
    """The input and hidden contributions to PyTorch's GRU gates, each split into (r, z, n)."""
    gx = x_t @ gru.weight_ih_l0.T + gru.bias_ih_l0
    gh = h @ gru.weight_hh_l0.T + gru.bias_hh_l0
    return gx.chunk(3, -1), gh.chunk(3, -1)


def _row_entropy_reference(q, k, scale):
    p = torch.softmax(scale * (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1)), dim=-1)
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


@checker
def check_attention_entropy(fn: Callable[..., torch.Tensor], prediction) -> str:
    """Predict, then measure: how the spread of attention changes when the scores are scaled.

    ``fn(q, k, scale)`` returns the entropy (nats) of every row of
    ``softmax(scale * q k^T / sqrt(d))``, shape ``(..., Tq)``. ``prediction`` is the reader's
    guess, written *before* measuring, for what multiplying the scores by 3 does to the mean
    row entropy: ``"up"`` or ``"down"``, or a function returning it. The function is checked against
    a reference; then the
    checker measures the answer on random queries and keys and says whether the guess was right.
    """
    if callable(prediction):  # the exercise asks for a function, so the student edition can stub it
        prediction = prediction()
    if prediction not in {"up", "down"}:
        _fail(f"prediction is {prediction!r}; write 'up' or 'down' (before you measure).")
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(4, 6, 16, generator=g), torch.randn(4, 9, 16, generator=g)
    for scale in (1.0, 3.0, 0.25):
        out = _as_tensor(fn(q.clone(), k.clone(), scale), f"row entropy at scale {scale}")
        ref = _row_entropy_reference(q, k, scale)
        if out.shape != ref.shape:
            _fail(
                f"the entropies have shape {tuple(out.shape)}, expected {tuple(ref.shape)}: "
                "one number per query row.",
                "sum -p log p over the keys (dim=-1).",
            )
        if (out < -1e-6).any():
            _fail("an entropy is negative.", "entropy is -sum(p * log p), with the minus sign.")
        check_close(
            out,
            ref,
            f"row entropies at scale {scale}",
            atol=1e-4,
            hint="p = softmax(scale * q @ k.T / sqrt(d)) "
            "over the keys; H = -(p * p.log()).sum(-1).",
        )
    flat = math.log(k.size(-2))
    at1 = _row_entropy_reference(q, k, 1.0).mean().item()
    at3 = _row_entropy_reference(q, k, 3.0).mean().item()
    measured = "down" if at3 < at1 else "up"
    if prediction != measured:
        _fail(
            f"you predicted '{prediction}', the measurement says '{measured}': mean row entropy "
            f"{at1:.2f} nats at scale 1, {at3:.2f} at scale 3 (a uniform row has {flat:.2f}).",
            "larger scores make the softmax sharper: the largest score takes more of the weight.",
        )
    return (
        f"attention entropy: {at1:.2f} nats at scale 1, {at3:.2f} at scale 3 "
        f"(uniform: {flat:.2f}); your prediction '{prediction}' was right."
    )


@checker
def check_gru_step(fn: Callable[..., torch.Tensor]) -> str:
    """Check ``fn(x_t, h, gru) -> new hidden state``, one step of a ``torch.nn.GRU``."""
    torch.manual_seed(0)
    D, H, B = 5, 6, 4
    gru = torch.nn.GRU(D, H, batch_first=True)
    g = torch.Generator().manual_seed(1)
    x_t, h = torch.randn(B, D, generator=g), torch.randn(B, H, generator=g)
    with torch.no_grad():
        out = _as_tensor(fn(x_t.clone(), h.clone(), gru), "gru_step(x_t, h, gru)")
        expected = gru(x_t[:, None], h[None])[1][0]  # torch's own step
    if out.shape != expected.shape:
        _fail(
            f"gru_step returned shape {tuple(out.shape)}, expected {tuple(expected.shape)} (B, H)."
        )
    err = (out - expected).abs().max().item()
    if err <= 1e-5:
        return "gru_step: agrees with torch.nn.GRU."
    with torch.no_grad():
        (xr, xz, xn), (hr, hz, hn) = _gru_parts(x_t, h, gru)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        swapped = z * n + (1 - z) * h  # the two terms of the interpolation exchanged
        gates_swapped_rz = (1 - r) * torch.tanh(xn + z * hn) + r * h  # r and z chunks exchanged
        # The reset gate applied to h before the hidden bias (the variant of Cho et al.'s paper).
        w_hn, b_hn = gru.weight_hh_l0[2 * H :], gru.bias_hh_l0[2 * H :]
        r_before_bias = (1 - z) * torch.tanh(xn + (r * h) @ w_hn.T + b_hn) + z * h
    if torch.allclose(out, swapped, atol=1e-5):
        _fail(
            "you mixed the old state and the candidate the wrong way round: got z*n + (1-z)*h.",
            "PyTorch's GRU uses h_new = (1 - z) * n + z * h: z = 1 keeps the old state.",
        )
    if torch.allclose(out, gates_swapped_rz, atol=1e-5):
        _fail(
            "the reset and update gates are swapped.",
            "PyTorch stacks the gates in the order r, z, n: chunk(3, dim=-1) gives r first.",
        )
    if torch.allclose(out, r_before_bias, atol=1e-5):
        _fail(
            "you applied the reset gate to h before the matrix product (as in the original paper); "
            "PyTorch applies it after.",
            "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).",
        )
    _fail(
        f"gru_step differs from torch.nn.GRU by up to {err:.3g}.",
        "gates r, z = sigmoid(input part + hidden part), n = tanh(x part + r * hidden part), "
        "h_new = (1 - z) * n + z * h; weights are stacked r, z, n.",
    )
    return ""  # unreachable


@checker
def check_query_focus(
    q, keys: torch.Tensor, words: Sequence[str], target: str, min_weight: float = 0.5
) -> str:
    """Check that the query ``q`` puts more than ``min_weight`` of its attention on ``target``.

    The weights are ``softmax(keys @ q / sqrt(d))``, exactly as in ``gptlib.attention.attention``.
    """
    q = torch.as_tensor(q, dtype=keys.dtype)
    if q.shape != keys.shape[-1:]:
        _fail(
            f"the query has shape {tuple(q.shape)}; it must "
            f"be one vector of {keys.shape[-1]} numbers "
            "(the size of a key)."
        )
    if not torch.isfinite(q).all():
        _fail("the query contains inf or NaN.", "use finite numbers; a few units are enough.")
    weights = torch.softmax(keys @ q / math.sqrt(keys.shape[-1]), dim=-1)
    shown = ", ".join(f"{w}: {p:.2f}" for w, p in zip(words, weights.tolist()))
    i = list(words).index(target)
    if weights[i] <= min_weight:
        best = words[int(weights.argmax())]
        hint = (
            f"'{best}' gets the most weight. Raise the entries of q where {target}'s key is large "
            "and the other keys are small (its private direction), or scale q up."
        )
        _fail(
            f"the query puts {weights[i]:.2f} on '{target}' "
            f"(needs > {min_weight}). Weights: {shown}.",
            hint,
        )
    return f"query focus: {weights[i]:.2f} of the attention on '{target}' ({shown})."


# ----------------------------------------------------------------------------- chapter 2


@checker
def check_block_params(fn: Callable[[int], int]) -> str:
    """Check ``fn(d)``: the parameter count of one GPT-2 block of width ``d`` (biases, MLP 4d
    wide)."""
    from gptlib.model import Block, GPTConfig

    for d in (8, 48, 768):
        n_head = 4 if d % 4 == 0 else 1
        blk = Block(GPTConfig(vocab_size=2, block_size=2, n_layer=1, n_head=n_head, n_embd=d))
        expected = sum(p.numel() for p in blk.parameters())
        got = fn(d)
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            _fail(f"block_params({d}) returned {type(got).__name__}, expected a number.")
        if got == expected:
            continue
        parts = {
            "attention (c_attn + c_proj)": sum(p.numel() for p in blk.attn.parameters()),
            "MLP (c_fc + c_proj)": sum(p.numel() for p in blk.mlp.parameters()),
            "two layer norms": sum(p.numel() for p in blk.ln_1.parameters()) * 2,
        }
        detail = "; ".join(f"{k}: {v:,}" for k, v in parts.items())
        if got == 12 * d * d:
            hint = (
                "12 d^2 counts the matrices only: add the biases and the layer norms' gains and "
                "biases."
            )
        elif got == expected - parts["two layer norms"]:
            hint = "you left out the two layer norms (a gain and a bias of d numbers each)."
        elif got == 12 * d * d + 4 * d:
            hint = "you left out the biases of the four linear layers (3d + d + 4d + d numbers)."
        else:
            hint = (
                "count c_attn (d -> 3d), c_proj (d -> d), c_fc (d -> 4d), the MLP's c_proj (4d ->"
                " d), each with a bias, and 2 x (gain + bias) of layer norm."
            )
        _fail(
            f"block_params({d}) = {got:,}, but a gptlib "
            f"Block of width {d} has {expected:,} parameters "
            f"({detail}).",
            hint,
        )
    return "block_params: correct (12 d^2 + 13 d)."


@checker
def check_layer_norm(fn: Callable[..., torch.Tensor]) -> str:
    """Check ``fn(x, weight, bias, eps=1e-5)``: normalise over the last dimension, then scale and
    shift.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 10, generator=g) * 3 + 2
    weight, bias = torch.randn(10, generator=g), torch.randn(10, generator=g)
    out = _as_tensor(fn(x.clone(), weight, bias, 1e-5), "layer_norm(x, weight, bias, eps)")
    expected = F.layer_norm(x, (10,), weight, bias, 1e-5)
    if out.shape != x.shape:
        _fail(f"layer_norm returned shape {tuple(out.shape)}, expected {tuple(x.shape)}.")
    if torch.allclose(out, expected, atol=1e-4):
        small = torch.randn(2, 10, generator=g) * 1e-3  # variance ~1e-6: eps matters here
        out_small = fn(small.clone(), torch.ones(10), torch.zeros(10), 1e-5)
        ref_small = F.layer_norm(small, (10,), eps=1e-5)
        check_close(
            out_small,
            ref_small,
            "layer_norm of a nearly constant input",
            atol=1e-3,
            hint="add eps to the variance *inside* the square root: (x - mean) / sqrt(var + eps).",
        )
        return "layer_norm: agrees with torch.nn.functional.layer_norm."
    mean = x.mean(-1, keepdim=True)
    unbiased = (x - mean) / torch.sqrt(
        x.var(-1, keepdim=True, unbiased=True) + 1e-5
    ) * weight + bias
    if torch.allclose(out, unbiased, atol=1e-4):
        _fail(
            "you used the unbiased variance (divides by n - 1).",
            "LayerNorm divides by n: x.var(-1, unbiased=False, "
            "keepdim=True), or ((x - mean)**2).mean(-1).",
        )
    no_affine = F.layer_norm(x, (10,), eps=1e-5)
    if torch.allclose(out, no_affine, atol=1e-4):
        _fail(
            "the output is normalised but weight and bias were not applied.",
            "finish with * weight + bias.",
        )
    other_dim = (x - x.mean(0, keepdim=True)) / torch.sqrt(
        x.var(0, keepdim=True, unbiased=False) + 1e-5
    ) * weight + bias
    if torch.allclose(out, other_dim, atol=1e-4):
        _fail(
            "you normalised over the batch (dim 0): that is batch norm.",
            "layer norm normalises each token's vector: mean and variance over dim=-1.",
        )
    err = (out - expected).abs().max().item()
    _fail(
        f"layer_norm differs from torch.nn.functional.layer_norm by up to {err:.3g}.",
        "y = (x - mean) / sqrt(var + eps) * weight + "
        "bias, with mean and var over the last dimension.",
    )
    return ""  # unreachable


@checker
def check_mlm_masking(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Check ``fn(ids, mask_id, vocab_size, rate, generator) -> (inputs, targets)``, BERT's rule:
    choose ``rate`` of the positions; of those 80% -> ``mask_id``, 10% -> random id, 10% unchanged;
    targets are the original ids at chosen positions and -100 elsewhere."""
    V, mask_id, rate = 50, 50, 0.15
    ids = torch.randint(V, (200, 256), generator=torch.Generator().manual_seed(0))
    result = fn(ids.clone(), mask_id, V, rate, torch.Generator().manual_seed(1))
    if not (isinstance(result, tuple) and len(result) == 2):
        _fail("the function must return a pair (inputs, targets).")
    inputs, targets = (_as_tensor(t, "masking") for t in result)
    if inputs.shape != ids.shape or targets.shape != ids.shape:
        _fail(
            f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must both have the "
            f"shape of ids, {tuple(ids.shape)}."
        )
    chosen = targets != -100
    if not chosen.any():
        _fail(
            "no target is scored: every target is -100.",
            "chosen positions keep their original id as target.",
        )
    if not torch.equal(targets[chosen], ids[chosen]):
        if (targets[chosen] == mask_id).float().mean() > 0.5:
            _fail(
                "the targets hold [MASK] ids: the target "
                "must be the ORIGINAL token, the one to recover."
            )
        _fail("at the scored positions the targets are not the original ids.")
    share = chosen.float().mean().item()
    if abs(share - rate) > 0.01:
        hint = (
            "unchosen positions need the target -100 (ignored by the loss)."
            if share > 0.5
            else f"choose each position with probability {rate}."
        )
        _fail(f"{share:.1%} of the positions are scored; BERT scores {rate:.0%}.", hint)
    if not torch.equal(inputs[~chosen], ids[~chosen]):
        _fail("positions that were not chosen were changed; only chosen positions are corrupted.")
    c_in, c_ids = inputs[chosen], ids[chosen]
    masked = (c_in == mask_id).float().mean().item()
    unchanged = (c_in == c_ids).float().mean().item()
    other = 1 - masked - unchanged
    summary = (
        f"of the chosen positions {masked:.1%} became [MASK], {other:.1%} "
        f"another id, {unchanged:.1%} unchanged"
    )
    if masked > 0.95:
        _fail(
            f"{summary}. BERT masks only 80% of them.",
            "replace 10% of the chosen positions by a random id and leave 10% unchanged.",
        )
    # A random replacement equals the original id with probability 1/V, so "unchanged" is ~10% +
    # 10%/V.
    if (
        abs(masked - 0.8) > 0.03
        or abs(other - 0.1 * (1 - 1 / V)) > 0.03
        or abs(unchanged - 0.1 - 0.1 / V) > 0.03
    ):
        _fail(
            f"{summary}; expected about 80% / 10% / 10%.",
            "draw one more uniform number u per chosen "
            "position: u < 0.8 -> [MASK], 0.8 <= u < 0.9 -> random id, else keep.",
        )
    if (c_in[c_in != mask_id] >= V).any():
        _fail(
            "some random replacements are outside the vocabulary.",
            f"draw them from range({V}), never [MASK] itself.",
        )
    return f"mlm masking: {share:.1%} of positions scored; {summary}."
