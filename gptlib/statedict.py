"""Does a state dict fit a model? Checks that name every mismatched tensor.

Used by :mod:`gptlib.checkpoint` (training checkpoints, model files), :mod:`gptlib.model`
(Hugging Face import) and :mod:`gptlib.assets`: a separate module so that none of them has
to import another just for these checks.
"""

from __future__ import annotations

from typing import Mapping

import torch

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "unwrap_model",
    "check_state_dict",
    "load_state_dict_checked",
    "strip_compile_prefix",
]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, inconsistent or the wrong shape for the model."""


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside ``DistributedDataParallel`` and/or ``torch.compile`` wrappers.

    Both wrappers prefix parameter names (``module.``, ``_orig_mod.``); checkpoints always
    store the unprefixed names so that they load into a plain model.
    """
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _shape(t: torch.Tensor | tuple) -> str:
    return str(tuple(t.shape if isinstance(t, torch.Tensor) else t))


class CheckpointMismatchError(CheckpointError):
    """A state dict whose tensors do not fit the model (a different config or architecture)."""


def strip_compile_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # torch.compile wraps the model and prefixes every key with "_orig_mod.".
    prefix = "_orig_mod."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def check_state_dict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise ``CheckpointMismatchError`` naming every tensor that is missing, unexpected or
    mis-shaped.

    PyTorch's own error for a shape mismatch is correct but buried in a long message; this
    one lists every problem, one line each, naming the tensor and both shapes.
    """
    expected = model.state_dict()
    problems = []
    for name, t in expected.items():
        if name not in state:
            problems.append(f"  {name}: missing from the {source} (model expects {_shape(t)})")
        elif tuple(state[name].shape) != tuple(t.shape):
            problems.append(
                f"  {name!r}: the {source} has shape {_shape(state[name])}, "
                f"the model expects {_shape(t)}"
            )
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        problems.append(
            f"  not in the model: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    if problems:
        config = getattr(model, "config", None)
        raise CheckpointMismatchError(
            f"the {source} was made for a different config ({len(problems)} problem(s)):\n"
            + "\n".join(problems[:20])
            + ("\n  ..." if len(problems) > 20 else "")
            + (f"\n(the model was built with {config})" if config is not None else "")
            + "\nBuild the model with the config saved alongside the checkpoint."
        )


def load_state_dict_checked(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> torch.nn.Module:
    """``model.load_state_dict(state)`` after :func:`check_state_dict`; returns the model.

    Accepts state dicts saved from ``torch.compile``-wrapped models (``_orig_mod.`` prefix).
    """
    model = unwrap_model(model)
    state = strip_compile_prefix(state)
    check_state_dict(model, state, source)
    torch.nn.Module.load_state_dict(model, state, strict=True)
    return model
