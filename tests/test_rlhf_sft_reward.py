"""SFT (response-only loss, generation, log-probs) and the reward model (all C(K,2) pairs per ranking)."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from gptlib import assets
from gptlib.model import GPT, GPTConfig
from gptlib.rlhf.reward import (
    RewardModel,
    comparison_accuracy,
    make_comparisons,
    make_reward_fn,
    pairwise_loss,
    ranking_pairs,
    rm_batch,
    rm_loss,
    train_reward_model,
)
from gptlib.rlhf.sft import (
    IGNORE,
    collate_examples,
    encode_example,
    generate_responses,
    response_logprobs,
    sft_examples,
    sft_loss,
    train_sft,
    win_rate,
)
from gptlib.rlhf.world import ToyWorld, make_tokenizer


@pytest.fixture(scope="module")
def world():
    return ToyWorld(0)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def tiny(tok, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=192, n_layer=1, n_head=2, n_embd=32))


def test_encode_example_masks_the_prompt(tok):
    ids, labels = encode_example(tok, "User: hi\nAssistant: ", "HI\n")
    full = tok.encode("User: hi\nAssistant: HI\n")
    assert ids == full[:-1]
    assert labels[-3:] == tok.encode("HI\n")
    assert all(label == IGNORE for label in labels[:-3])
    with pytest.raises(ValueError):
        encode_example(tok, "User: hi\nAssistant: ", "")


def test_sft_loss_is_mean_over_response_tokens(world, tok):
    model = tiny(tok)
    pairs = sft_examples(world, "train", 5)
    x, y = collate_examples([encode_example(tok, p, r) for p, r in pairs])
    loss = sft_loss(model, (x, y))
    logp = torch.log_softmax(model(x), -1)
    nll = [-logp[b, t, y[b, t]] for b in range(y.shape[0]) for t in range(y.shape[1]) if y[b, t] != IGNORE]
    assert torch.allclose(loss, torch.stack(nll).mean(), atol=1e-5)
    # response_logprobs sums the same log-probabilities per example
    lp = response_logprobs(model, tok, [p for p, _ in pairs], [r for _, r in pairs])
    per_example = [sum(logp[b, t, y[b, t]].item() for t in range(y.shape[1]) if y[b, t] != IGNORE) for b in range(5)]
    assert torch.allclose(lp, torch.tensor(per_example), atol=1e-4)
    with pytest.raises(ValueError):
        sft_loss(model, (x, torch.full_like(y, IGNORE)))


def test_sft_training_learns_demonstrations(world, tok):
    model = tiny(tok)
    pairs = sft_examples(world, "train", 200)
    res = train_sft(model, tok, pairs, iters=30, batch_size=16, lr=3e-3, val_pairs=pairs[:50])
    curve = res.curve("val_loss")[1]
    assert curve[-1] < 0.8 * curve[0], curve


def test_generate_responses_stops_at_newline(world, tok):
    model = tiny(tok)
    prompts = [p.formatted for p in world.prompts("test", 7)]
    out = generate_responses(model, tok, prompts, max_new_tokens=12, generator=torch.Generator().manual_seed(0))
    assert len(out) == 7
    for a in out:
        assert ("\n" not in a and len(a) == 12) or (a.endswith("\n") and a.count("\n") == 1)
    # greedy is deterministic, and batching by length does not change a row's answer
    g1 = generate_responses(model, tok, prompts, max_new_tokens=12, greedy=True)
    g2 = [generate_responses(model, tok, [p], max_new_tokens=12, greedy=True)[0] for p in prompts]
    assert g1 == g2


def test_win_rate(world):
    ps = world.prompts("val", 4)
    demos = [world.demonstration(p) for p in ps]
    assert win_rate(world.gold_reward, ps, demos, ["?\n"] * 4) == 1.0
    assert win_rate(world.gold_reward, ps, demos, demos) == 0.5


def test_ranking_pairs():
    for K in range(2, 10):
        pairs = ranking_pairs(list(range(K))[::-1])
        assert len(pairs) == math.comb(K, 2)
        assert all(w > l for w, l in pairs)  # ranking best first: K-1 beats everything
    with pytest.raises(ValueError):
        ranking_pairs([0, 0, 1])


def test_rm_batch_and_loss(world, tok):
    comps = make_comparisons(world, "train", 3, k=4)
    batch = rm_batch(tok, comps, block_size=192)
    assert batch["ids"].shape[0] == 12 and batch["win"].shape == (18,)
    torch.manual_seed(0)
    rm = RewardModel(tiny(tok))
    r = rm(batch["ids"], batch["mask"])
    assert r.shape == (12,)
    # reference: loop over rankings and pairs, scoring each (prompt, response) on its own
    terms = []
    for c in comps:
        for w, l in c.pairs:
            rw = rm(torch.tensor([tok.encode(c.prompt.formatted + c.responses[w])]))[0]
            rl = rm(torch.tensor([tok.encode(c.prompt.formatted + c.responses[l])]))[0]
            terms.append(-F.logsigmoid(rw - rl))
    assert torch.allclose(rm_loss(rm, batch), torch.stack(terms).mean(), atol=1e-5)
    assert torch.allclose(pairwise_loss(torch.tensor([0.0]), torch.tensor([0.0])), torch.tensor(math.log(2)))
    assert torch.isfinite(pairwise_loss(torch.tensor([-300.0]), torch.tensor([300.0])))


def test_reward_fn_accuracy_and_save(world, tok, tmp_path):
    torch.manual_seed(0)
    rm = RewardModel(tiny(tok))
    comps = make_comparisons(world, "train", 30, k=4)
    res = train_reward_model(rm, tok, comps, iters=12, rankings_per_batch=4, lr=3e-3, val=comps[:6])
    curve = res.curve("val_loss")[1]
    assert curve[-1] < curve[0]
    fn = make_reward_fn(rm, tok)
    ps = world.prompts("val", 3)
    out = fn([p.formatted for p in ps], [world.demonstration(p) for p in ps])
    assert out.shape == (3,) and out.dtype == torch.float32
    acc = comparison_accuracy(fn, comps)
    assert 0.0 <= acc <= 1.0

    # an oracle reward (the gold reward itself) ranks every noise-free pair right
    def oracle(prompts, responses):
        return torch.tensor([world.gold_reward(p, r) for p, r in zip(prompts, responses)])

    assert comparison_accuracy(oracle, comps) == 1.0
    assert comparison_accuracy(oracle, comps, gold=world) == 1.0
    # the asset format: one model.safetensors, rebuilt by RewardModel.from_config
    assets.save("rlhf/reward", command="test", settings={}, metrics={}, wall_s=0.0, model=rm,
                builder="gptlib.rlhf.reward:RewardModel.from_config",
                model_config=dataclasses.asdict(rm.gpt.config), tokenizer=tok, root=tmp_path)
    loaded = assets.load("rlhf/reward", root=tmp_path)
    rm2, tok2 = loaded.model, loaded.tokenizer
    assert sorted(p.name for p in loaded.path.iterdir()) == ["meta.json", "model.safetensors",
                                                            "tokenizer.json"]
    assert torch.allclose(make_reward_fn(rm2, tok2)(ps, [world.demonstration(p) for p in ps]), out, atol=1e-6)


def test_noisy_labels_disagree_with_gold(world):
    comps = make_comparisons(world, "train", 40, k=4, noise=0.5, seed=1)

    def oracle(prompts, responses):
        return torch.tensor([world.gold_reward(p, r) for p, r in zip(prompts, responses)])

    assert comparison_accuracy(oracle, comps) < 0.95  # the noisy labeller contradicts the truth sometimes


def test_shipped_checkpoints(world):
    base, tok = assets.load("rlhf/base").model, assets.load("rlhf/base").tokenizer
    sft = assets.load("rlhf/sft").model
    ps = world.prompts("test", 10, kinds=["unsafe", "unknown"], seed=7)
    a_sft = generate_responses(sft, tok, [p.formatted for p in ps], 30, greedy=True)
    a_base = generate_responses(base, tok, [p.formatted for p in ps], 30, greedy=True)
    assert win_rate(world.gold_reward, ps, a_sft, a_base) > 0.6
    rm = assets.load("rlhf/reward").model
    comps = make_comparisons(world, "test", 20, k=4, seed=5)
    assert comparison_accuracy(make_reward_fn(rm, tok), comps, gold=world) > 0.75
