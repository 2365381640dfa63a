"""Exercise checkers for chapter 6 (GPT-3: in-context learning, induction heads).

- :func:`check_build_prompt`: a k-shot prompt builder in the chapter's format;
- :func:`check_induction_score`: the induction score of attention maps on a repeated sequence;
- :func:`check_previous_token_score`: how much each head attends to the token just before;
- :func:`check_copy_losses`: the loss on the first and on the second copy of a repeated sequence;
- :func:`check_head_ablation`: a copy of an attention-only model with one head silenced.
"""

from __future__ import annotations

from typing import Callable

import torch

from gptlib.checks import CheckFailed, _fail, check_close, checker  # noqa: F401

__all__ = [
    "check_build_prompt",
    "check_induction_score",
    "check_previous_token_score",
    "check_copy_losses",
    "check_head_ablation",
]


# ----------------------------------------------------------------------------- prompts


@checker
def check_build_prompt(fn: Callable[[list, str], str]) -> str:
    """Check ``fn(examples, query)``: ``"\\nx1=y1\\nx2=y2\\nquery="``.

    Zero-shot: ``"\\nquery="``."""
    from gptlib.icl import build_prompt

    cases = [
        ([("kqd", "7"), ("bxa", "2"), ("kqd", "7")], "bxa"),
        ([("给妈妈打电话", "C")], "呼叫老板"),
        ([], "wbqe"),
    ]
    for examples, query in cases:
        got = fn(list(examples), query)
        want = build_prompt(examples, query)
        if not isinstance(got, str):
            _fail(f"the prompt builder returned {type(got).__name__}, expected a str.")
        if got == want:
            continue
        k = len(examples)
        where = f"for a {k}-shot prompt (examples={examples!r}, query={query!r})"
        if got.rstrip("\n") == want.rstrip("\n") or got.strip() == want.strip():
            _fail(
                f"{where} the text is right but the newlines around it are not: "
                f"got {got!r}, expected {want!r}.",
                "every line starts after a newline (also the first), and the prompt ends "
                "right after '=': "
                "no newline at the end, or the model would answer on a new line.",
            )
        if got.replace(" =", "=").replace("= ", "=") == want:
            _fail(
                f"{where} you wrote ' = ' with spaces: got {got!r}, expected {want!r}.",
                "the models were trained on lines 'x=y' without spaces; "
                "a format they never saw costs accuracy.",
            )
        if k and examples[-1][1] and got.endswith(want[-len(query) - 1 :] + examples[-1][1]):
            _fail(
                f"{where} the prompt ends with an answer: got {got!r}.",
                "the question's answer must not be in the prompt: end with 'query='.",
            )
        if k and got.count("\n") != want.count("\n"):
            _fail(
                f"{where} got {got.count(chr(10))} lines, expected {want.count(chr(10))}: "
                f"got {got!r}, "
                f"expected {want!r}.",
                "one line per solved example, then one for the question.",
            )
        _fail(
            f"{where} got {got!r}, expected {want!r}.",
            "write '\\n' + 'x=y' for each example, then '\\n' + query + '='.",
        )
    return "build_prompt: correct for zero-, one- and few-shot prompts."


# ----------------------------------------------------------------------------- induction


@checker
def check_induction_score(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> str:
    """Check ``fn(att, length)`` on attention maps ``(..., 2L, 2L)`` of a sequence repeated once:
    the mean, over queries ``t`` in the second half, of ``att[..., t, t - length + 1]``."""
    from gptlib.induction import induction_score_from_attention

    g = torch.Generator().manual_seed(6)
    length = 7
    T = 2 * length
    raw = torch.rand(3, 2, T, T, generator=g)
    att = torch.tril(raw)
    att = att / att.sum(-1, keepdim=True)
    got = fn(att.clone(), length)
    want = induction_score_from_attention(att, length)
    if not isinstance(got, torch.Tensor):
        got = torch.as_tensor(got)
    if got.shape != want.shape:
        _fail(
            f"for attention of shape {tuple(att.shape)} you returned shape {tuple(got.shape)}, "
            f"expected {tuple(want.shape)}: one score per head.",
            "average over the query positions only (the second-to-last dimension), "
            "keep the leading ones.",
        )
    if torch.allclose(got.double(), want.double(), atol=1e-6):
        # and a perfect induction head must score 1
        perfect = torch.zeros(T, T)
        perfect[0, 0] = 1
        for t in range(1, T):
            perfect[t, max(0, t - length + 1) if t >= length else 0] = 1
        score = float(torch.as_tensor(fn(perfect, length)))
        if abs(score - 1) > 1e-6:
            _fail(f"a perfect induction head scores {score:.3f}, expected 1.")
        return "induction score: correct."
    q = torch.arange(length, T)
    wrong = {
        "the previous occurrence itself (t - length), not the token after it": att[
            ..., q, q - length
        ].mean(-1),
        "the previous token (t - 1)": att[..., q, q - 1].mean(-1),
        "all queries, including the first half where nothing repeats yet": torch.stack(
            [att[..., t, max(t - length + 1, 0)] for t in range(T)], -1
        ).mean(-1),
        "a sum instead of a mean over the queries": att[..., q, q - length + 1].sum(-1),
        "the keys and queries swapped (att[..., key, query])": att[..., q - length + 1, q].mean(-1),
    }
    for what, value in wrong.items():
        if got.shape == value.shape and torch.allclose(got.double(), value.double(), atol=1e-6):
            _fail(
                f"your score measures {what}.",
                "for a query t in the second half, the token after the previous occurrence "
                "of token t is at t - length + 1; average att[..., t, t - length + 1] over "
                "t = length ... 2*length - 1.",
            )
    check_close(
        got,
        want,
        "induction scores",
        atol=1e-6,
        hint="for each query t in the second half, take att[..., t, t - length + 1], then average.",
    )
    return "induction score: correct."


@checker
def check_previous_token_score(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """Check ``fn(att)`` on maps ``(..., T, T)``: mean over t = 1..T-1 of ``att[..., t, t - 1]``."""
    from gptlib.induction import previous_token_score

    g = torch.Generator().manual_seed(7)
    T = 9
    att = torch.tril(torch.rand(2, 3, T, T, generator=g))
    att = att / att.sum(-1, keepdim=True)
    got = torch.as_tensor(fn(att.clone()))
    want = previous_token_score(att)
    if got.shape != want.shape:
        _fail(
            f"for attention of shape {tuple(att.shape)} you returned shape {tuple(got.shape)}, "
            f"expected {tuple(want.shape)}: one score per head.",
            "average over the query positions (the second-to-last dimension) only.",
        )
    t = torch.arange(1, T)
    wrong = {
        "the diagonal (each token attending to itself)": att[
            ..., torch.arange(T), torch.arange(T)
        ].mean(-1),
        "the next token (t + 1), which a causal head cannot see": att[..., t - 1, t].mean(-1),
        "all queries, including t = 0 which has no previous token": torch.cat(
            [att[..., :1, 0], att[..., t, t - 1]], -1
        ).mean(-1),
    }
    for what, value in wrong.items():
        if torch.allclose(got.double(), value.double(), atol=1e-6):
            _fail(
                f"your score measures {what}.",
                "take att[..., t, t - 1] for t = 1 ... T - 1 and average.",
            )
    check_close(
        got,
        want,
        "previous-token scores",
        atol=1e-6,
        hint="take att[..., t, t - 1] for t = 1 ... T - 1 and average.",
    )
    return "previous-token score: correct."


def _small_attn_model(seed: int = 0):
    from gptlib.induction import AttnOnly

    torch.manual_seed(seed)
    model = AttnOnly.from_config(dict(vocab_size=32, block_size=32, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():  # a random model with sharper attention than at initialisation
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


@checker
def check_copy_losses(fn: Callable) -> str:
    """Check ``fn(model, seq)`` -> ``(first, second)``: mean next-token loss (nats) on copy 1 and
    copy 2 of ``seq`` (``(B, 2L)``, a sequence repeated once), scoring positions 1..L-1 of each
    copy."""
    from gptlib.induction import copy_losses, repeated_tokens

    model = _small_attn_model()
    seq = repeated_tokens(8, 12, 32, seed=3)
    got = fn(model, seq.clone())
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        _fail(f"return two numbers (first, second), got {type(got).__name__}.")
    first, second = (float(v) for v in got)
    want = copy_losses(model, length=12, n_seq=8, seed=3)
    if abs(first - want["second"]) < 1e-4 and abs(second - want["first"]) < 1e-4:
        _fail("your first and second copies are swapped.")
    if abs(first - want["first"]) > 1e-4:
        _fail(
            f"first copy: got {first:.4f} nats, expected {want['first']:.4f}.",
            "logits at position t predict token t + 1: the loss of copy 1 is over predictions of "
            "tokens 1 .. L-1, i.e. logits at positions 0 .. L-2.",
        )
    if abs(second - want["second"]) > 1e-4:
        _fail(
            f"second copy: got {second:.4f} nats, expected {want['second']:.4f}.",
            "score tokens L+1 .. 2L-1 (logits at positions L .. 2L-2): the first token of the "
            "second copy follows the end of the first, which nothing predicts.",
        )
    return "copy losses: correct."


@checker
def check_head_ablation(fn: Callable) -> str:
    """Check ``fn(model, layer, head)``: a *new* model whose head ``(layer, head)`` adds nothing."""
    from gptlib.induction import ablate_head

    model = _small_attn_model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    idx = torch.randint(32, (2, 20), generator=torch.Generator().manual_seed(2))
    for layer, head in ((1, 0), (0, 1)):
        got = fn(model, layer, head)
        if got is model or any(
            not torch.equal(before[k], v) for k, v in model.state_dict().items()
        ):
            _fail(
                "your function changed the model it was given.",
                "copy it first (copy.deepcopy(model)) and silence the head in the copy.",
            )
        with torch.no_grad():
            want_logits = ablate_head(model, layer, head)(idx)
            got_logits = got(idx)
            if torch.allclose(got_logits, model(idx), atol=1e-6):
                _fail(
                    f"silencing head ({layer}, {head}) changed nothing in the logits.",
                    "zero the columns head * d_head ... (head + 1) * d_head of that layer's "
                    "attn[layer].proj.weight (they read this head's output).",
                )
        check_close(
            got_logits,
            want_logits,
            f"logits with head ({layer}, {head}) silenced",
            atol=1e-5,
            hint="zero only this head's columns of the output projection, not rows, "
            "and not another head's.",
        )
    return "head ablation: correct."
