"""The GPT model, whole, in one file.

A GPT turns a sequence of token ids into, at every position, scores (logits) for the
next token::

    ids -> token embedding + position embedding
        -> n_layer x Block (attention: tokens talk; MLP: each token thinks)
        -> final LayerNorm -> lm_head -> logits (B, T, vocab_size)

Two block layouts are provided, because the book follows the history:

- ``style="gpt1"`` (Radford et al., 2018): *post-LN*, ``x = LN(x + sublayer(x))``,
  no final LayerNorm.
- ``style="gpt2"`` (Radford et al., 2019): *pre-LN*, ``x = x + sublayer(LN(x))``, plus a
  final LayerNorm ``ln_f``. Keeping the residual path free of normalisation makes deep
  stacks much easier to train.

Parameter names follow OpenAI's GPT-2 checkpoints (``wte``, ``wpe``, ``h.0.attn.c_attn``,
``mlp.c_fc``, ``ln_f`` ...) so ``GPT.from_hf`` / ``GPT.to_hf`` are plain renames and transposes.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gptlib.attention import KVCache, MultiHeadAttention
from gptlib.statedict import (
    CheckpointMismatchError,
    check_state_dict,
    load_state_dict_checked,
    strip_compile_prefix,
)

__all__ = ["GPTConfig", "MLP", "Block", "GPT", "lm_loss", "load_checked", "CheckpointMismatchError"]

# OpenAI's released GPT-2 sizes: (n_layer, n_head, n_embd).
GPT2_SIZES: dict[str, tuple[int, int, int]] = {
    "gpt2": (12, 12, 768),  # 124M
    "gpt2-medium": (24, 16, 1024),  # 350M
    "gpt2-large": (36, 20, 1280),  # 774M
    "gpt2-xl": (48, 25, 1600),  # 1558M
}


# ----------------------------------------------------------------------------- config


@dataclass
class GPTConfig:
    """Every number that defines a GPT's shape.

    ``block_size`` is the context length (number of learned positions); ``tie_weights``
    shares the token-embedding matrix with the output layer (both map between token ids
    and ``n_embd``-dimensional vectors, and sharing saves ``vocab_size * n_embd`` parameters).
    ``causal=False`` lets every position attend to every other (a BERT-style masked LM,
    chapter 2); such a model cannot generate text left to right.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True
    style: Literal["gpt1", "gpt2"] = "gpt2"
    tie_weights: bool = True
    layer_norm_eps: float = 1e-5
    causal: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}.")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd / n_head channels. "
                f"Try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.style not in ("gpt1", "gpt2"):
            raise ValueError(f"style must be 'gpt1' or 'gpt2', got {self.style!r}.")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> "GPTConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # --- presets ---------------------------------------------------------------------

    @classmethod
    def gpt1(cls, **overrides: Any) -> "GPTConfig":
        """GPT-1 as published: 12 x 768, 512 positions, 40478-token BPE, dropout 0.1, post-LN, tied
        embeddings.
        """
        base = dict(
            vocab_size=40478,
            block_size=512,
            n_layer=12,
            n_head=12,
            n_embd=768,
            dropout=0.1,
            style="gpt1",
            tie_weights=True,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def gpt2(cls, **overrides: Any) -> "GPTConfig":
        """GPT-2 layout (pre-LN, final LayerNorm, tied embeddings), by default the 124M size.

        Dropout defaults to 0 (OpenAI trained with 0.1; at the book's scales and for
        fine-tuning, no dropout trains faster) — pass ``dropout=0.1`` to match the paper.
        """
        base = dict(
            vocab_size=50257,
            block_size=1024,
            n_layer=12,
            n_head=12,
            n_embd=768,
            dropout=0.0,
            style="gpt2",
            tie_weights=True,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def gpt2_small(cls, **overrides: Any) -> "GPTConfig":
        """GPT-2 small: 124M parameters (12 layers, 12 heads, 768 wide, 1024 context)."""
        return cls.gpt2(**overrides)

    @classmethod
    def gpt2_size(cls, name: str, **overrides: Any) -> "GPTConfig":
        """One of OpenAI's sizes by name: ``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``."""
        if name not in GPT2_SIZES:
            raise ValueError(f"Unknown GPT-2 size {name!r}; choose from {sorted(GPT2_SIZES)}.")
        n_layer, n_head, n_embd = GPT2_SIZES[name]
        return cls.gpt2(**{"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, **overrides})

    @classmethod
    def tiny(cls, vocab_size: int, **overrides: Any) -> "GPTConfig":
        """A laptop-sized GPT-2-style model (~0.8M parameters with a small vocabulary).

        4 layers x 4 heads x 128 wide, 128 positions: trains on a CPU in minutes.
        """
        base = dict(
            vocab_size=vocab_size,
            block_size=128,
            n_layer=4,
            n_head=4,
            n_embd=128,
            dropout=0.0,
            style="gpt2",
            tie_weights=True,
        )
        return cls(**{**base, **overrides})


# ----------------------------------------------------------------------------- blocks


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU, project back.

    Attention only mixes information between tokens (a weighted average); this is where
    each token's vector is transformed non-linearly.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # The tanh approximation of GELU is what OpenAI used ("gelu_new" in transformers);
        # the exact erf GELU differs by ~1e-3 and would break logit-exact conversion.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block: attention then MLP, each wrapped in a residual connection.

    ``gpt2`` (pre-LN):  ``x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))``
    ``gpt1`` (post-LN): ``x = ln_1(x + attn(x));  x = ln_2(x + mlp(x))``
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.pre_ln = config.style == "gpt2"
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = MultiHeadAttention(
            config.n_embd, config.n_head, config.dropout, config.bias, causal=config.causal
        )
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        layer_idx: int | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        attn_in = self.ln_1(x) if self.pre_ln else x
        attn_out = self.attn(
            attn_in,
            mask=mask,
            kv_cache=kv_cache,
            layer_idx=layer_idx,
            return_weights=return_weights,
        )
        weights = None
        if return_weights:
            attn_out, weights = attn_out
        if self.pre_ln:
            x = x + attn_out
            x = x + self.mlp(self.ln_2(x))
        else:
            x = self.ln_1(x + attn_out)
            x = self.ln_2(x + self.mlp(x))
        return (x, weights) if return_weights else x


# ----------------------------------------------------------------------------- checkpoints


# The shape-checked loader lives with the checkpoint code; re-exported here for convenience.
load_checked = load_state_dict_checked


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Next-token cross entropy averaged over all positions whose target is not ``ignore_index``.

    ``logits`` is ``(B, T, V)`` and ``targets`` ``(B, T)``: ``targets[b, t]`` is the token that
    follows position ``t`` (the input shifted left by one).
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index
    )


# ----------------------------------------------------------------------------- model


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-1 or GPT-2 layout)."""

    #: ``forward(..., last_only=True)`` computes the LM head for the last position only
    #: (gptlib.sampling asks for this flag instead of importing this class).
    supports_last_only = True

    @classmethod
    def from_config(cls, config: dict) -> "GPT":
        """An untrained GPT from a plain config dict (how :mod:`gptlib.assets` rebuilds one)."""
        return cls(GPTConfig(**config))

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embeddings
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        # Pre-LN blocks leave the residual stream un-normalised, so GPT-2 adds a final LN.
        # GPT-1's post-LN blocks already end in a LayerNorm: Identity keeps the code uniform.
        if config.style == "gpt2":
            self.ln_f: nn.Module = nn.LayerNorm(
                config.n_embd, eps=config.layer_norm_eps, bias=config.bias
            )
        else:
            self.ln_f = nn.Identity()
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix, two uses
        self.apply(self._init_weights)
        # GPT-2 scaling: each block *adds* two projections to the residual stream, so its
        # variance grows with depth; shrinking those layers by 1/sqrt(2 n_layer) compensates.
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- forward ----------------------------------------------------------------------

    def _check_length(self, T: int, past: int) -> None:
        total, block = past + T, self.config.block_size
        if total > block:
            where = f" ({past} cached + {T} new)" if past else ""
            raise ValueError(
                f"Sequence length {total}{where} exceeds the model's block_size of {block}: "
                f"it has only {block} position embeddings. "
                f"Crop the prompt to its last {block} tokens "
                f"(idx[:, -{block}:]) or use a config with a larger block_size."
            )

    def hidden_states(
        self, idx: torch.Tensor, mask: torch.Tensor | None = None, kv_cache: KVCache | None = None
    ) -> torch.Tensor:
        """Final hidden states ``(B, T, n_embd)`` (after ``ln_f``): the vector each position
        hands to the output layer. Classification and reward heads are put on these."""
        B, T = idx.shape
        past = kv_cache.pos if kv_cache is not None else 0
        self._check_length(T, past)
        positions = torch.arange(past, past + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for layer_idx, block in enumerate(self.h):
            x = block(x, mask=mask, kv_cache=kv_cache, layer_idx=layer_idx)
        return self.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        kv_cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
        *,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits ``(B, T, vocab_size)`` for the next token at every position of ``idx`` ``(B, T)``.

        With a ``kv_cache``, ``idx`` holds only the new tokens; their positions continue after
        the cached ones. ``last_only=True`` returns ``(B, 1, V)`` for the last position only,
        which is all generation needs and skips most of the (large) output matmul.
        """
        h = self.hidden_states(idx, mask=mask, kv_cache=kv_cache)
        if last_only:
            h = h[:, -1:, :]
        return self.lm_head(h)

    @torch.no_grad()
    def attention_weights(
        self, idx: torch.Tensor, mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The attention weights of every layer, a list of ``n_layer`` tensors ``(B, H, T, T)``.

        Uses the written-out attention (slower, but it returns the weights) for plotting.
        """
        B, T = idx.shape
        self._check_length(T, 0)
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))
        maps = []
        for block in self.h:
            x, weights = block(x, mask=mask, return_weights=True)
            maps.append(weights)
        return maps

    def new_kv_cache(self, max_len: int | None = None) -> KVCache:
        """An empty KV cache for this model, holding up to ``max_len`` (default ``block_size``)
        positions.
        """
        return KVCache(self.config.n_layer, max_len or self.config.block_size)

    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, **sampling_kwargs: Any
    ) -> torch.Tensor:
        """Continue ``idx`` by ``max_new_tokens`` tokens; see ``gptlib.sampling.generate`` for the
        options.
        """
        from gptlib.sampling import (
            generate,  # local import: keeps `import gptlib.model` light
        )

        return generate(self, idx, max_new_tokens, **sampling_kwargs)

    # --- bookkeeping ------------------------------------------------------------------

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (a tied matrix counts once).

        ``non_embedding=True`` leaves out the lookup tables that do no arithmetic: the position
        embeddings, and the token embeddings unless they are tied to ``lm_head`` (then the
        same matrix does the output matmul, so it counts). This is the ``N`` of ``6N`` FLOPs.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.wte.weight.numel()
        return n

    def estimate_flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: ``6 N + 12 L T d`` (Kaplan et al. / PaLM appendix B).

        ``6N``: each weight does a multiply-add (2 FLOPs) in the forward pass and twice
        that in the backward pass. ``12 L T d``: the attention score and weighted-sum matmuls,
        which grow with the context ``T`` and have no weights.
        """
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layer * T * c.n_embd

    def estimate_mfu(
        self, tokens_per_second: float, peak_flops: float = 989e12, seq_len: int | None = None
    ) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s divided by the hardware peak.

        ``peak_flops`` defaults to an H100 SXM's dense bf16 peak (989 TFLOP/s); an A100 is 312e12.
        """
        return self.estimate_flops_per_token(seq_len) * tokens_per_second / peak_flops

    def configure_optimizer(
        self,
        weight_decay: float,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.95),
        device_type: str = "cpu",
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices and embeddings only.

        Decay pulls weights towards zero; that regularises matrices, but on biases and
        LayerNorm gains (1-D parameters) it only fights the scale the network needs.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # The fused CUDA kernel updates all parameters in one launch instead of one per tensor.
        fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if fused else {}
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **extra)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ):
        """Like ``nn.Module.load_state_dict`` but a mismatch names the tensor and both shapes."""
        state_dict = strip_compile_prefix(state_dict)
        if strict:
            check_state_dict(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- Hugging Face interop -----------------------------------------------------------

    # HF GPT-2 uses Conv1D, which stores weights as (in, out): the transpose of nn.Linear.
    _HF_TRANSPOSED = (
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    )

    @classmethod
    def from_hf(cls, hf_model: nn.Module) -> "GPT":
        """Build a ``GPT`` from a ``transformers.GPT2LMHeadModel`` (e.g. OpenAI's weights).

        Only the standard GPT-2 architecture converts (gelu_new, MLP 4x wide, no attention tweaks).
        """
        hf_cfg = hf_model.config
        activation = getattr(hf_cfg, "activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(
                f"Cannot convert: activation {activation!r}; gptlib uses tanh-GELU (gelu_new)."
            )
        if getattr(hf_cfg, "n_inner", None) not in (None, 4 * hf_cfg.n_embd):
            raise ValueError(
                f"Cannot convert: n_inner={hf_cfg.n_inner}; gptlib's MLP is 4 * n_embd wide."
            )
        if getattr(hf_cfg, "scale_attn_by_inverse_layer_idx", False) or not getattr(
            hf_cfg, "scale_attn_weights", True
        ):
            raise ValueError(
                "Cannot convert: non-standard attention scaling in the Hugging Face config."
            )
        config = GPTConfig.gpt2(
            vocab_size=hf_cfg.vocab_size,
            block_size=hf_cfg.n_positions,
            n_layer=hf_cfg.n_layer,
            n_head=hf_cfg.n_head,
            n_embd=hf_cfg.n_embd,
            dropout=float(getattr(hf_cfg, "resid_pdrop", 0.0)),
            bias=True,
            tie_weights=bool(getattr(hf_cfg, "tie_word_embeddings", True)),
            layer_norm_eps=hf_cfg.layer_norm_epsilon,
        )
        model = cls(config)
        ours = model.state_dict()
        converted = {}
        for key, tensor in hf_model.state_dict().items():
            name = key.removeprefix("transformer.")
            if name not in ours:
                continue  # e.g. old checkpoints' causal-mask buffers "attn.bias"
            if name.endswith(cls._HF_TRANSPOSED):
                tensor = tensor.t()
            converted[name] = tensor.detach().clone()
        if config.tie_weights:
            converted["lm_head.weight"] = converted["wte.weight"]
        model.load_state_dict(converted)
        return model

    def to_hf(self) -> nn.Module:
        """Convert to a ``transformers.GPT2LMHeadModel`` (gpt2 style with biases only)."""
        c = self.config
        if c.style != "gpt2":
            raise ValueError(
                f"Only style='gpt2' models convert to Hugging Face GPT-2; this one is {c.style!r} "
                "(post-LN blocks, no ln_f), which GPT2LMHeadModel cannot represent."
            )
        if not c.bias:
            raise ValueError(
                "Hugging Face GPT-2 always has biases; this model was built with bias=False."
            )
        from transformers import GPT2Config, GPT2LMHeadModel

        hf_cfg = GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.block_size,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            layer_norm_epsilon=c.layer_norm_eps,
            activation_function="gelu_new",
            resid_pdrop=c.dropout,
            embd_pdrop=c.dropout,
            attn_pdrop=c.dropout,
            tie_word_embeddings=c.tie_weights,
            # GPT-2's default special token 50256 does not exist in a smaller vocabulary.
            bos_token_id=50256 if c.vocab_size > 50256 else None,
            eos_token_id=50256 if c.vocab_size > 50256 else None,
        )
        hf_model = GPT2LMHeadModel(hf_cfg)
        hf_state = hf_model.state_dict()
        new_state = {}
        for name, tensor in self.state_dict().items():
            key = name if name == "lm_head.weight" else f"transformer.{name}"
            if key not in hf_state:
                raise ValueError(f"No Hugging Face counterpart for {name!r}.")
            if name.endswith(self._HF_TRANSPOSED):
                tensor = tensor.t()
            new_state[key] = tensor.detach().clone().to(hf_state[key].dtype)
        result = hf_model.load_state_dict(new_state, strict=False)
        # Only non-parameter buffers (old versions' causal-mask "attn.bias") may be left unset.
        missing = [
            k for k in result.missing_keys if not k.endswith(("attn.bias", "attn.masked_bias"))
        ]
        if missing:
            raise ValueError(f"Conversion left Hugging Face tensors unset: {missing}")
        if c.tie_weights:
            hf_model.tie_weights()
        return hf_model.to(self.wte.weight.device).eval()
