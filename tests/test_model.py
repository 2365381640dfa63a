"""Tests for gptlib.model: shapes, configs, training, conversion, caching, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch

from gptlib.attention import padding_mask
from gptlib.model import GPT, CheckpointMismatchError, GPTConfig, lm_loss, load_checked


def small_config(style: str = "gpt2", **overrides) -> GPTConfig:
    base = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)
    preset = GPTConfig.gpt1 if style == "gpt1" else GPTConfig.gpt2
    return preset(**{**base, "dropout": 0.0, **overrides})


@pytest.fixture(params=["gpt1", "gpt2"])
def model(request) -> GPT:
    torch.manual_seed(0)
    return GPT(small_config(request.param)).eval()


# ----------------------------------------------------------------------------- shapes & config


def test_output_shapes(model):
    idx = torch.randint(0, 50, (3, 11))
    assert model(idx).shape == (3, 11, 50)
    assert model.hidden_states(idx).shape == (3, 11, 32)
    assert model(idx, last_only=True).shape == (3, 1, 50)
    torch.testing.assert_close(model(idx, last_only=True)[:, 0], model(idx)[:, -1])
    torch.testing.assert_close(model(idx), model.lm_head(model.hidden_states(idx)))
    maps = model.attention_weights(idx)
    assert len(maps) == 2 and maps[0].shape == (3, 4, 11, 11)


def test_styles_differ_in_layout():
    gpt1, gpt2 = GPT(small_config("gpt1")), GPT(small_config("gpt2"))
    assert not any(name.startswith("ln_f") for name, _ in gpt1.named_parameters())
    assert any(name.startswith("ln_f") for name, _ in gpt2.named_parameters())
    # Same parameter shapes otherwise, but different computations (post-LN vs pre-LN).
    gpt1.load_state_dict({k: v for k, v in gpt2.state_dict().items() if not k.startswith("ln_f")})
    idx = torch.randint(0, 50, (1, 8))
    assert not torch.allclose(gpt1(idx), gpt2(idx))


def test_presets():
    g1 = GPTConfig.gpt1()
    assert (g1.style, g1.n_layer, g1.n_embd, g1.block_size, g1.tie_weights) == ("gpt1", 12, 768, 512, True)
    g2 = GPTConfig.gpt2_small()
    assert (g2.style, g2.n_layer, g2.n_head, g2.n_embd, g2.vocab_size, g2.block_size) == ("gpt2", 12, 12, 768, 50257, 1024)
    assert GPTConfig.gpt2(n_layer=3).n_layer == 3
    assert GPTConfig.gpt2_size("gpt2-medium").n_embd == 1024


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"n_embd \(30\) must be divisible by n_head \(4\)"):
        GPTConfig.gpt2(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GPTConfig.tiny(vocab_size=0)
    with pytest.raises(ValueError, match="style"):
        GPTConfig.gpt2(style="gpt3")


def test_parameter_counts():
    # Building on the meta device allocates nothing: instant even for 124M parameters.
    with torch.device("meta"):
        gpt2 = GPT(GPTConfig.gpt2_small())
    assert gpt2.num_params(non_embedding=False) == 124_439_808  # OpenAI's GPT-2 small
    assert gpt2.num_params() == 124_439_808 - 1024 * 768  # minus position embeddings
    tiny = GPT(GPTConfig.tiny(vocab_size=65))
    assert 100_000 <= tiny.num_params(non_embedding=False) <= 1_000_000
    untied = GPT(small_config(tie_weights=False))
    tied = GPT(small_config())
    assert untied.num_params(False) - tied.num_params(False) == 50 * 32
    assert tied.lm_head.weight is tied.wte.weight and untied.lm_head.weight is not untied.wte.weight


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    m = GPT(GPTConfig.gpt2(vocab_size=64, block_size=8, n_layer=8, n_head=4, n_embd=128))
    expected = 0.02 / math.sqrt(2 * 8)
    assert m.h[0].attn.c_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert m.h[0].mlp.c_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert m.h[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.all(m.h[0].attn.c_attn.bias == 0)


def test_flops_estimate_matches_a_flop_counter():
    # An independent count: torch's FlopCounterMode over a real forward + backward pass (the
    # Linear layers), plus the two attention matmuls written out at the same shapes (the fused
    # attention kernel is not counted on the CPU). The estimate's N also holds LayerNorm and
    # bias parameters, which do no matmul: a few percent at this size.
    from torch.utils.flop_counter import FlopCounterMode

    cfg = small_config(n_layer=3, n_embd=64, n_head=4, block_size=64, vocab_size=97)
    m = GPT(cfg)
    B, T, C = 2, cfg.block_size, cfg.n_embd
    x = torch.randint(0, cfg.vocab_size, (B, T))
    with FlopCounterMode(display=False) as counter:
        m(x).sum().backward()
    q = torch.randn(B, cfg.n_head, T, C // cfg.n_head, requires_grad=True)
    k, v = torch.randn_like(q, requires_grad=True), torch.randn_like(q, requires_grad=True)
    with FlopCounterMode(display=False) as attn_counter:
        ((q @ k.transpose(-2, -1)).softmax(-1) @ v).sum().backward()
    counted = (counter.get_total_flops() + cfg.n_layer * attn_counter.get_total_flops()) / (B * T)
    assert m.estimate_flops_per_token() == pytest.approx(counted, rel=0.05)


def test_mfu_is_achieved_over_peak():
    m = GPT(small_config())
    # 1000 tokens/s at F FLOPs per token on a 1 TFLOP/s chip: F * 1000 / 1e12 of the peak
    assert m.estimate_mfu(1000.0, peak_flops=1e12) == pytest.approx(m.estimate_flops_per_token() * 1e-9)


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("style", ["gpt1", "gpt2"])
def test_preset_trains_on_a_repeated_sequence(style):
    torch.manual_seed(0)
    model = GPT(small_config(style, vocab_size=16, dropout=0.1))
    pattern = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2])
    x, y = pattern[:-1].repeat(4, 1), pattern[1:].repeat(4, 1)
    optimizer = model.configure_optimizer(weight_decay=0.01, lr=3e-3, betas=(0.9, 0.95), device_type="cpu")
    losses = []
    model.train()
    for _ in range(50):
        loss = lm_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # ~ln(16) at init
    assert losses[-1] < 0.25 * losses[0]  # reaches ~0.2 in practice


def test_configure_optimizer_decays_only_matrices():
    m = GPT(small_config())
    opt = m.configure_optimizer(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.95), device_type="cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    # Every parameter exactly once (the tied wte/lm_head matrix included).
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_lm_loss():
    V = 10
    logits = torch.zeros(2, 3, V)
    targets = torch.tensor([[1, 2, -100], [4, -100, -100]])
    assert lm_loss(logits, targets).item() == pytest.approx(math.log(V))
    logits[0, 0, 1] = 100.0  # a confident, correct prediction at one position
    assert lm_loss(logits, targets).item() == pytest.approx(2 * math.log(V) / 3, rel=1e-4)


# ----------------------------------------------------------------------------- masks & caching


def test_padding_mask_makes_right_padding_harmless(model):
    a = torch.randint(0, 50, (1, 5))
    batch = torch.cat([a, torch.zeros(1, 3, dtype=torch.long)], dim=1)  # 5 real tokens + 3 padding
    batch = torch.cat([batch, torch.randint(0, 50, (1, 8))])
    logits = model(batch, mask=padding_mask([5, 8], 8))
    torch.testing.assert_close(logits[0, :5], model(a)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [[1] * 12, [5, 1, 1, 1, 4], [12]])
def test_kv_cache_matches_full_forward(model, chunks):
    idx = torch.randint(0, 50, (2, 12))
    full = model(idx)
    cache = model.new_kv_cache()
    pieces, start = [], 0
    for n in chunks:
        pieces.append(model(idx[:, start:start + n], kv_cache=cache))
        start += n
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_overlong_input_raises_helpful_error(model):
    with pytest.raises(ValueError, match=r"(?s)length 17.*block_size of 16.*[Cc]rop.*larger block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_kv_cache()
    model(torch.zeros(1, 14, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=r"17 \(14 cached \+ 3 new\)"):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)


# ----------------------------------------------------------------------------- checkpoints


def test_wrong_shape_checkpoint_raises_clear_error():
    small = GPT(small_config(n_embd=32))
    wide = GPT(small_config(n_embd=64))
    with pytest.raises(CheckpointMismatchError, match=r"(?s)different config.*'wte.weight'.*checkpoint has shape \(50, 64\).*model expects \(50, 32\)"):
        small.load_state_dict(wide.state_dict())
    with pytest.raises(CheckpointMismatchError, match="h.0.attn.c_attn.weight"):
        load_checked(small, wide.state_dict())
    deeper = GPT(small_config(n_layer=3))
    with pytest.raises(CheckpointMismatchError, match=r"not in the model: \['h.2"):
        load_checked(small, deeper.state_dict())


def test_checkpoint_round_trip_and_compiled_prefix():
    a, b = GPT(small_config()), GPT(small_config())
    state = {f"_orig_mod.{k}": v for k, v in a.state_dict().items()}  # as saved from torch.compile
    load_checked(b, state)
    idx = torch.randint(0, 50, (1, 6))
    torch.testing.assert_close(a(idx), b(idx))


# ----------------------------------------------------------------------------- Hugging Face


def test_from_hf_reproduces_logits():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=100, n_positions=32,
                                        bos_token_id=None, eos_token_id=None)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    ours = GPT.from_hf(hf).eval()
    assert ours.config.block_size == 32 and ours.config.n_embd == 64
    idx = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tie", [True, False])
def test_to_hf_reproduces_logits(tie):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = GPT(GPTConfig.gpt2(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64, tie_weights=tie)).eval()
    with torch.no_grad():  # perturb biases and LayerNorms so that their conversion is exercised too
        for p in ours.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    hf = ours.to_hf()
    idx = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=1e-4, rtol=1e-4)
    back = GPT.from_hf(hf).eval()
    assert back.config.tie_weights == tie
    with torch.no_grad():
        torch.testing.assert_close(back(idx), ours(idx), atol=1e-5, rtol=1e-5)


def test_gpt1_style_does_not_convert_to_hf():
    with pytest.raises(ValueError, match="style='gpt2'"):
        GPT(small_config("gpt1")).to_hf()


# ----------------------------------------------------------------------------- GPU


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_autocast_on_gpu_matches_cpu_fp32():
    from gptlib.device import autocast

    torch.manual_seed(0)
    cpu_model = GPT(GPTConfig.tiny(vocab_size=100, block_size=64)).eval()
    gpu_model = GPT(cpu_model.config).cuda().eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    idx = torch.randint(0, 100, (2, 40))
    with torch.no_grad():
        reference = cpu_model(idx)
        with autocast("cuda"):
            logits = gpu_model(idx.cuda())
            cache = gpu_model.new_kv_cache()
            cached = torch.cat([gpu_model(idx[:, :30].cuda(), kv_cache=cache)]
                               + [gpu_model(idx[:, t:t + 1].cuda(), kv_cache=cache) for t in range(30, 40)], dim=1)
            out = gpu_model.generate(idx[:, :8].cuda(), 100, greedy=True)  # runs past block_size: crop fallback
    assert logits.dtype == torch.bfloat16 and cache.keys[0].dtype == torch.bfloat16
    scale = reference.abs().max().item()
    assert (logits.float().cpu() - reference).abs().max().item() < 0.05 * scale + 1e-2
    assert (cached.float().cpu() - reference).abs().max().item() < 0.05 * scale + 1e-2
    assert out.shape == (2, 108) and out.device.type == "cuda"
    assert torch.equal(out[:, :8].cpu(), idx[:, :8]) and int(out.max()) < 100
