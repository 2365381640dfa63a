"""gptlib.compress: int8 quantization and pruning on small random models (fast, no assets needed)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gptlib import compress
from gptlib.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=31, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)).eval()


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 31, (2000,), generator=g)


def test_absmax_round_trip_is_within_half_a_step():
    w = torch.randn(64, 48) * torch.logspace(-3, 1, 64).unsqueeze(1)
    q, scale = compress.absmax_quantize(w)
    assert q.dtype == torch.int8 and scale.shape == (64, 1)
    assert int(q.abs().max()) == 127  # absmax uses the full range
    assert ((w - compress.dequantize(q, scale)).abs() <= scale / 2 * (1 + 1e-6)).all()


def test_absmax_zero_row_and_bad_input():
    q, scale = compress.absmax_quantize(torch.zeros(3, 4))
    assert torch.isfinite(scale).all() and (compress.dequantize(q, scale) == 0).all()
    with pytest.raises(ValueError, match="2-D"):
        compress.absmax_quantize(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("mode", ["weight_only", "w8a8"])
def test_int8_linear_is_close_to_the_float_layer(mode):
    torch.manual_seed(0)
    lin = nn.Linear(40, 24)
    layer = compress.Int8Linear.from_linear(lin, mode)
    x = torch.randn(5, 7, 40)
    with torch.no_grad():
        ref, out = lin(x), layer(x)
    assert out.shape == ref.shape
    rel = float((out - ref).norm() / ref.norm())
    assert rel < (0.005 if mode == "weight_only" else 0.02), rel
    if mode == "weight_only":  # exactly the float layer with the dequantized weight
        torch.testing.assert_close(out, nn.functional.linear(x, layer.dequantized_weight(), lin.bias))


def test_int8_linear_w8a8_matches_integer_arithmetic():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8, bias=False)
    layer = compress.Int8Linear.from_linear(lin, "w8a8")
    x = torch.randn(3, 16)
    xs = x.abs().amax(1, keepdim=True) / 127
    x8 = torch.round(x / xs).clamp(-127, 127)
    expected = (x8 @ layer.weight_int8.double().T.float()) * xs * layer.scale.T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_quantize_model_shrinks_and_keeps_outputs(tiny_gpt, ids):
    q = compress.quantize_model(tiny_gpt)
    assert not any(isinstance(m, compress.Int8Linear) for m in tiny_gpt.modules())  # original untouched
    n_int8 = sum(isinstance(m, compress.Int8Linear) for m in q.modules())
    assert n_int8 == 4 * tiny_gpt.config.n_layer
    assert isinstance(q.lm_head, nn.Linear)  # tied to the embedding: skipped
    assert compress.model_size_bytes(q) < 0.6 * compress.model_size_bytes(tiny_gpt)
    p32, p8 = compress.perplexity(tiny_gpt, ids), compress.perplexity(q, ids)
    assert abs(p8 / p32 - 1) < 0.01, (p32, p8)


def test_torch_dynamic_int8_agrees_with_ours(tiny_gpt, ids):
    ours = compress.quantize_model(tiny_gpt, mode="w8a8")
    theirs = compress.torch_dynamic_int8(tiny_gpt)
    for name in compress.linear_layers(tiny_gpt):
        tw = theirs.get_submodule(name).weight().dequantize().float()
        ow = ours.get_submodule(name).dequantized_weight()
        assert ((tw - ow).abs() <= ours.get_submodule(name).scale * (1 + 1e-4)).all(), name
    assert abs(compress.perplexity(ours, ids) / compress.perplexity(theirs, ids) - 1) < 0.02


def test_bf16_copy(tiny_gpt, ids):
    b = compress.to_bf16(tiny_gpt)
    assert next(b.parameters()).dtype == torch.bfloat16 and next(tiny_gpt.parameters()).dtype == torch.float32
    assert abs(compress.perplexity(b, ids) / compress.perplexity(tiny_gpt, ids) - 1) < 0.02


@pytest.mark.parametrize("target", [0.0, 0.1, 0.5, 0.73])
def test_magnitude_mask_exact_sparsity_even_with_ties(target):
    w = torch.randint(-3, 4, (20, 30)).float()  # many ties
    mask = compress.magnitude_mask(w, target)
    assert int((~mask).sum()) == round(target * w.numel())
    if (~mask).any() and mask.any():
        assert w.abs()[~mask].max() <= w.abs()[mask].min()


def test_bad_sparsity_is_explained():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        compress.magnitude_mask(torch.randn(3, 3), 1.5)


def test_sparsegpt_one_layer_beats_magnitude_on_correlated_inputs():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 24, generator=g) @ torch.randn(24, 24, generator=g)  # correlated inputs
    W = torch.randn(16, 24, generator=g)
    H = 2 * X.T.double() @ X.double() / X.shape[0]
    for target in (0.3, 0.5, 0.7):
        w_obs = compress.sparsegpt_prune_linear(W, H, target, block_size=8)
        w_mag = W * compress.magnitude_mask(W, target)
        assert int((w_obs == 0).sum()) == round(target * W.numel())
        err = lambda w: float((X @ (W - w).T).norm())  # noqa: E731
        assert err(w_obs) < err(w_mag), target


def test_sparsegpt_with_zero_sparsity_is_identity_and_checks_shapes():
    W = torch.randn(4, 6)
    H = torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(compress.sparsegpt_prune_linear(W, H, 0.0), W)
    with pytest.raises(ValueError, match="hessian"):
        compress.sparsegpt_prune_linear(W, torch.eye(5), 0.5)


def test_sparsegpt_hessian_equals_2xxt_over_n(tiny_gpt, ids):
    calib = ids[: 4 * 32].view(4, 32)
    hs = compress.calibration_hessians(tiny_gpt, calib)
    caught = {}
    layer = tiny_gpt.h[0].mlp.c_fc
    def hook(module, inputs, output):
        caught["x"] = inputs[0].detach()

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            tiny_gpt(calib)
    finally:
        h.remove()
    x = caught["x"].reshape(-1, layer.in_features).double()
    ref = 2 * x.T @ x / x.shape[0]
    # float32 products accumulated in float64: equal up to float32 rounding
    torch.testing.assert_close(hs["h.0.mlp.c_fc"], ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize("sequential", [True, False])
def test_prune_sparsegpt_model(tiny_gpt, ids, sequential):
    calib = ids[: 8 * 32].view(8, 32)
    pruned = compress.prune_sparsegpt(tiny_gpt, calib, 0.5, sequential=sequential)
    for name, value in compress.sparsity(pruned).items():
        if name != "all":
            numel = compress.linear_layers(pruned)[name].weight.numel()
            assert value == round(0.5 * numel) / numel
    assert compress.sparsity(tiny_gpt)["all"] < 0.01  # the original is untouched
    assert math.isfinite(compress.perplexity(pruned, ids))


def test_report_table(tiny_gpt, ids):
    rows = compress.report({"fp32": tiny_gpt, "int8": compress.quantize_model(tiny_gpt)}, ids,
                           ids[:64].view(2, 32), max_windows=4, repeats=1)
    text = compress.format_table(rows)
    assert "fp32" in text and "int8" in text and len(text.splitlines()) == 3
    assert rows[1].size_bytes < rows[0].size_bytes
