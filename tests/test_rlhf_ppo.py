"""PPO pieces against references, and an end-to-end run that raises a synthetic reward."""
import copy

import pytest
import torch

from gptlib.model import GPT, GPTConfig
from gptlib.rlhf.ppo import PolicyWithValue, PPOConfig, PPOTrainer
from gptlib.rlhf.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    gae_reference,
    kl_shaped_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from gptlib.rlhf.rollout import (
    pack_responses,
    response_token_stats,
    sample_responses,
    sample_with_kl,
)
from gptlib.tokenizer import CharTokenizer


def test_gae_matches_the_definition_per_row_with_padding():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 6, generator=g), torch.randn(3, 6, generator=g)
    lengths = [6, 4, 1]
    mask = torch.zeros(3, 6)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    for gamma, lam in [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0), (1.0, 0.0)]:
        adv, ret = compute_gae(rewards * mask, values, mask, gamma, lam)
        for b, n in enumerate(lengths):
            ref = gae_reference(rewards[b, :n].tolist(), values[b, :n].tolist(), gamma, lam)
            torch.testing.assert_close(adv[b, :n], torch.tensor(ref), atol=1e-5, rtol=0)
            torch.testing.assert_close(ret[b, :n], adv[b, :n] + values[b, :n], atol=1e-6, rtol=0)
            assert adv[b, n:].abs().sum() == 0 and ret[b, n:].abs().sum() == 0


def test_gae_hand_computed_and_1d():
    # r = [0, 0, 1], V = [0.5, 0.5, 0.5], gamma = 1, lam = 1: A_t = 1 - V_t (Monte Carlo return minus baseline)
    adv, ret = compute_gae(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.5, 0.5]), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(ret, torch.tensor([1.0, 1.0, 1.0]))
    # lam = 0: the one-step TD error
    adv, _ = compute_gae(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.2, 0.5]), gamma=1.0, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([-0.3, 0.3, 0.5]))
    with pytest.raises(ValueError, match="same shape"):
        compute_gae(torch.zeros(3), torch.zeros(4))


def test_clipped_policy_loss_matches_a_reference():
    g = torch.Generator().manual_seed(1)
    old = torch.randn(4, 5, generator=g)
    new = old + 0.5 * torch.randn(4, 5, generator=g)
    adv = torch.randn(4, 5, generator=g)
    mask = (torch.rand(4, 5, generator=g) > 0.3).float()
    loss, clipfrac = ppo_policy_loss(new, old, adv, mask, clip_range=0.2)
    ref_terms, clipped = [], []
    for i in range(4):
        for j in range(5):
            if mask[i, j]:
                r = float(torch.exp(new[i, j] - old[i, j]))
                a = float(adv[i, j])
                obj = min(r * a, min(max(r, 0.8), 1.2) * a)
                ref_terms.append(-obj)
                clipped.append(obj != r * a)
    assert abs(loss.item() - sum(ref_terms) / len(ref_terms)) < 1e-5
    assert abs(clipfrac.item() - sum(clipped) / len(clipped)) < 1e-6
    # ratio 1 (no update yet): the loss is minus the mean advantage, nothing clipped
    loss0, cf0 = ppo_policy_loss(old, old, adv, None, 0.2)
    assert abs(loss0.item() + adv.mean().item()) < 1e-6 and cf0.item() == 0


def test_value_loss_clips_towards_old_values():
    old, ret = torch.zeros(1, 2), torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[0.1, 0.9]])  # second moved more than 0.2: clipped value 0.2 is further from 1
    loss, frac = ppo_value_loss(new, old, ret, None, clip_range_value=0.2)
    assert abs(loss.item() - 0.5 * (0.81 + 0.64) / 2) < 1e-6
    assert frac.item() == 0.5


def test_kl_controller_direction():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(12.0, 10)  # KL above target: tighten
    assert ctl.value > 0.1
    up = ctl.value
    ctl.update(1.0, 10)  # below target: loosen
    assert ctl.value < up
    ctl2 = AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl2.update(6.0, 10)
    assert ctl2.value == pytest.approx(0.1)
    ctl3 = AdaptiveKLController(0.1, 6.0, 100)
    ctl3.update(600.0, 10)  # the error is clipped at +20%
    assert ctl3.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 10)
    assert fixed.value == 0.3


def test_kl_shaped_rewards_puts_score_on_last_token():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    lp, ref = torch.zeros(2, 3), torch.full((2, 3), -1.0)
    rewards, kl = kl_shaped_rewards(torch.tensor([2.0, 5.0]), lp, ref, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.5, -0.5, 1.5], [4.5, 0.0, 0.0]]))
    torch.testing.assert_close(kl.sum(1), torch.tensor([3.0, 1.0]))


def test_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert abs(w[0, :3].mean()) < 1e-6 and w[0, 3] == 0


def _tiny(vocab, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=1, n_head=2, n_embd=32))


def test_response_logprobs_match_a_direct_computation():
    lm = _tiny(7)
    prompts, responses = [[1, 2], [3]], [[4, 5, 6], [2]]
    ids, starts, mask = pack_responses(prompts, responses, pad_id=0)
    out = response_token_stats(lm, ids, starts, mask, with_entropy=True)["logprobs"]
    for b, (p, r) in enumerate(zip(prompts, responses)):
        seq = torch.tensor([p + r])
        logp = torch.log_softmax(lm(seq)[0], -1)
        expect = [logp[len(p) - 1 + j, r[j]].item() for j in range(len(r))]
        torch.testing.assert_close(out[b, : len(r)], torch.tensor(expect), atol=1e-5, rtol=0)
        assert out[b, len(r):].abs().sum() == 0
    with pytest.raises(ValueError, match="empty response"):
        pack_responses([[1]], [[]])


def test_sample_responses_groups_lengths_and_stops_at_eos():
    lm = _tiny(5)
    g = torch.Generator().manual_seed(0)
    out = sample_responses(lm, [[1, 2], [3], [1, 1]], 6, eos_token=4, generator=g)
    assert len(out) == 3
    for r in out:
        assert 1 <= len(r) <= 6
        assert 4 not in r[:-1]
    with pytest.raises(ValueError, match="block_size"):
        sample_responses(lm, [[1] * 30], 6)


def test_ppo_raises_a_synthetic_reward_quickly():
    """Reward = share of 'a' in the response: PPO must raise it within a few seconds on CPU."""
    tok = CharTokenizer("abcd?.")
    lm = _tiny(tok.vocab_size, seed=0)
    ref = copy.deepcopy(lm)
    policy = PolicyWithValue(lm)

    def reward(prompts, responses):
        return torch.tensor([r.count("a") / max(1, len(r)) for r in responses])

    cfg = PPOConfig(batch_size=16, minibatch_size=16, ppo_epochs=4, lr=1e-2, max_new_tokens=8,
                    init_kl_coef=0.02, seed=0)
    trainer = PPOTrainer(policy, ref, tok, ["b?", "c?", "dd?"], reward, cfg, eos_token=tok.encode(".")[0])
    hist = trainer.train(15, progress=False)  # about a second on one CPU thread
    first = sum(h["reward"] for h in hist[:3]) / 3
    last = sum(h["reward"] for h in hist[-3:]) / 3
    assert last > first + 0.3, (first, last)
    assert hist[-1]["kl"] > 0  # it moved away from the reference
    for key in ("reward", "kl", "kl_coef", "entropy", "clipfrac", "policy_loss", "value_loss"):
        assert key in hist[-1]


def test_ppo_adaptive_kl_and_ptx_run():
    tok = CharTokenizer("abcd?.")
    lm = _tiny(tok.vocab_size, seed=1)
    ref = copy.deepcopy(lm)
    x = torch.tensor([tok.encode("abcdabcd")])

    def reward(prompts, responses):
        return torch.tensor([float(r.count("b")) for r in responses])

    cfg = PPOConfig(batch_size=8, minibatch_size=8, ppo_epochs=1, lr=1e-3, max_new_tokens=4,
                    adaptive_kl=True, target_kl=0.01, kl_horizon=50, ptx_coef=0.5)
    trainer = PPOTrainer(PolicyWithValue(lm), ref, tok, ["a?"], reward, cfg,
                         ptx_batch=lambda: (x[:, :-1], x[:, 1:]),
                         metrics_fn=lambda p, r: {"len": sum(map(len, r)) / len(r)})
    hist = trainer.train(4, progress=False)
    assert "ptx_loss" in hist[-1] and "len" in hist[-1]
    assert hist[-1]["kl_coef"] != hist[0]["kl_coef"]
    with pytest.raises(ValueError, match="ptx_batch"):
        PPOTrainer(PolicyWithValue(_tiny(6)), ref, tok, ["a?"], reward, PPOConfig(ptx_coef=0.1))
    with pytest.raises(TypeError, match="PolicyWithValue"):
        PPOTrainer(lm, ref, tok, ["a?"], reward)


def test_reward_model_critic_is_a_separate_copy_and_rescales_exactly():
    from gptlib.rlhf.reward import RewardModel

    lm = _tiny(7)
    rm = RewardModel(_tiny(7, seed=3))
    policy = PolicyWithValue(lm, critic=rm)
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        _, v = policy(idx)
        # at every position the critic reads the reward model's head on the reward model's body
        torch.testing.assert_close(v, rm.head(rm.gpt.hidden_states(idx)).squeeze(-1))
        torch.testing.assert_close(v[:, -1], rm(idx))
        policy.rescale_values(2.0, 4.0)
        _, v2 = policy(idx)
    torch.testing.assert_close(v2, (v - 2.0) / 4.0)
    assert policy.critic_body is not rm.gpt  # training the critic leaves the reward model alone
    n_critic = len(policy.value_parameters())
    assert n_critic == len(list(rm.parameters()))
    with pytest.raises(TypeError, match="reward model"):
        PolicyWithValue(lm, critic=torch.nn.Linear(2, 2))


def test_sample_with_kl_is_the_summed_log_ratio_of_the_samples():
    tok = CharTokenizer.from_text("abc\n")
    lm, ref = _tiny(tok.vocab_size, seed=0), _tiny(tok.vocab_size, seed=1)
    eos = tok.encode("\n")[0]
    prompts = ["ab", "c", "ab"]
    gen = torch.Generator().manual_seed(3)
    responses, kl = sample_with_kl(lm, ref, tok, prompts, 6, eos_token=eos, generator=gen)
    for p, r, k in zip(prompts, responses, kl.tolist()):
        seq = torch.tensor([tok.encode(p + r)])
        n = len(tok.encode(p))
        with torch.no_grad():
            lp = torch.log_softmax(lm(seq)[0], -1)
            lr = torch.log_softmax(ref(seq)[0], -1)
        ids = seq[0].tolist()
        expect = sum(lp[t - 1, ids[t]] - lr[t - 1, ids[t]] for t in range(n, len(ids)))
        assert abs(k - float(expect)) < 1e-4
    same, kl_self = sample_with_kl(lm, lm, tok, prompts, 6, eos_token=eos,
                                   generator=torch.Generator().manual_seed(3))
    assert same == responses and kl_self.abs().max() < 1e-6
