"""The chapter 6 checkers accept correct answers and reject typical wrong ones, helpfully."""

from __future__ import annotations

import pytest
import torch

from gptlib.checks import CheckFailed, check_build_prompt, check_induction_score

# ----------------------------------------------------------------------------- prompts


def good_prompt(examples, query):
    return "".join(f"\n{x}={y}" for x, y in examples) + f"\n{query}="


def test_build_prompt_accepts_a_correct_builder():
    assert "correct" in check_build_prompt(good_prompt)


def test_build_prompt_rejects_a_trailing_newline():
    with pytest.raises(CheckFailed, match="newlines") as err:
        check_build_prompt(lambda ex, q: good_prompt(ex, q) + "\n")
    assert "Hint:" in str(err.value)


def test_build_prompt_rejects_spaces_around_the_sign():
    with pytest.raises(CheckFailed, match="spaces"):
        check_build_prompt(lambda ex, q: "".join(f"\n{x} = {y}" for x, y in ex) + f"\n{q} =")


def test_build_prompt_rejects_a_missing_question():
    with pytest.raises(CheckFailed, match="lines"):
        check_build_prompt(lambda ex, q: "".join(f"\n{x}={y}" for x, y in ex) + "=")


def test_build_prompt_rejects_a_non_string():
    with pytest.raises(CheckFailed, match="str"):
        check_build_prompt(lambda ex, q: list(ex))


# ----------------------------------------------------------------------------- induction


def good_score(att, length):
    q = torch.arange(length, 2 * length)
    return att[..., q, q - length + 1].mean(-1)


def test_induction_score_accepts_a_correct_score():
    assert "correct" in check_induction_score(good_score)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (
            lambda att, L: att[..., torch.arange(L, 2 * L), torch.arange(0, L)].mean(-1),
            "previous occurrence itself",
        ),
        (
            lambda att, L: att[..., torch.arange(L, 2 * L), torch.arange(L - 1, 2 * L - 1)].mean(
                -1
            ),
            "previous token",
        ),
        (lambda att, L: att[..., torch.arange(L, 2 * L), torch.arange(1, L + 1)].sum(-1), "sum"),
        (
            lambda att, L: att[..., torch.arange(1, L + 1), torch.arange(L, 2 * L)].mean(-1),
            "swapped",
        ),
    ],
)
def test_induction_score_names_typical_mistakes(wrong, message):
    with pytest.raises(CheckFailed, match=message) as err:
        check_induction_score(wrong)
    assert "Hint:" in str(err.value)


def test_induction_score_rejects_a_wrong_shape():
    with pytest.raises(CheckFailed, match="shape"):
        check_induction_score(lambda att, L: good_score(att, L).mean())


# ----------------------------------------------------------------------------- previous token, copies, ablation

from gptlib.checks import check_copy_losses, check_head_ablation, check_previous_token_score  # noqa: E402


def test_previous_token_score_accepts_the_right_one_and_names_mistakes():
    def good(att):
        t = torch.arange(1, att.shape[-1])
        return att[..., t, t - 1].mean(-1)

    assert "correct" in check_previous_token_score(good)
    with pytest.raises(CheckFailed, match="diagonal"):
        check_previous_token_score(lambda att: att.diagonal(dim1=-2, dim2=-1).mean(-1))
    with pytest.raises(CheckFailed, match="shape"):
        check_previous_token_score(lambda att: good(att).mean())


def good_copy_losses(model, seq):
    L = seq.shape[1] // 2
    with torch.no_grad():
        logp = torch.log_softmax(model(seq[:, :-1]), -1)
    nll = -logp.gather(-1, seq[:, 1:, None])[..., 0]
    return float(nll[:, : L - 1].mean()), float(nll[:, L:].mean())


def test_copy_losses_accepts_the_right_one_and_rejects_a_swap_and_an_off_by_one():
    assert "correct" in check_copy_losses(good_copy_losses)
    with pytest.raises(CheckFailed, match="swapped"):
        check_copy_losses(lambda m, s: good_copy_losses(m, s)[::-1])

    def off_by_one(model, seq):  # scores the first token of copy 2 too
        L = seq.shape[1] // 2
        with torch.no_grad():
            logp = torch.log_softmax(model(seq[:, :-1]), -1)
        nll = -logp.gather(-1, seq[:, 1:, None])[..., 0]
        return float(nll[:, : L - 1].mean()), float(nll[:, L - 1 :].mean())

    with pytest.raises(CheckFailed, match="second copy"):
        check_copy_losses(off_by_one)


def test_head_ablation_accepts_a_copy_and_rejects_in_place_or_wrong_slices():
    import copy

    def good(model, layer, head):
        out = copy.deepcopy(model)
        d = model.config.n_embd // model.config.n_head
        with torch.no_grad():
            out.attn[layer].proj.weight[:, head * d : (head + 1) * d] = 0
        return out

    assert "correct" in check_head_ablation(good)

    def in_place(model, layer, head):
        d = model.config.n_embd // model.config.n_head
        with torch.no_grad():
            model.attn[layer].proj.weight[:, head * d : (head + 1) * d] = 0
        return model

    with pytest.raises(CheckFailed, match="changed the model"):
        check_head_ablation(in_place)

    def rows(model, layer, head):  # zeroes output rows instead of the head's input columns
        out = copy.deepcopy(model)
        d = model.config.n_embd // model.config.n_head
        with torch.no_grad():
            out.attn[layer].proj.weight[head * d : (head + 1) * d, :] = 0
        return out

    with pytest.raises(CheckFailed, match="silenced"):
        check_head_ablation(rows)
