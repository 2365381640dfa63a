"""Saving and loading models and training runs, safely.

Two kinds of file, both in the `safetensors <https://huggingface.co/docs/safetensors>`_
format (a JSON header followed by raw tensor bytes: no pickle, so loading a file can never
run code hidden inside it):

**Model files** (``save_model`` / ``load_model``): one ``.safetensors`` file holding the
weights, with the model's :class:`~gptlib.model.GPTConfig` stored as JSON in the file's
metadata. That is all it takes to rebuild the model, so these are what the book ships in
``assets/``::

    save_model("assets/shakespeare_char.safetensors", model)
    model = load_model("assets/shakespeare_char.safetensors")

**Training checkpoints** (``save_checkpoint`` / ``load_checkpoint``): a pair of files,
``ckpt.safetensors`` (model weights and optimizer state) and ``ckpt.json`` (a small
sidecar: the caller's ``meta`` dict, e.g. the iteration, RNG states and loss history,
plus what is needed to rebuild the optimizer's state dict).

Three things can go wrong with checkpoints, and this module deals with each:

1. *A crash or Ctrl-C in the middle of a save.* Every file is first written in full to
   ``<name>.tmp`` and only then renamed onto its real name with ``os.replace``, which the
   operating system performs atomically: the real name points at either the old complete
   file or the new complete file, never at half of one. The two temporaries are both
   finished before either rename, so if we die between the two renames the loader finds the
   new tensors plus the finished new sidecar, still named ``ckpt.json.tmp``, and completes
   the save ("rolls forward"). The previous good checkpoint is never lost.
2. *Two files that do not belong together* (a copy of one file but not the other, a
   half-finished save). Each save gets a random id stored in both files; the loader
   compares them, and compares the tensor file's size with the size the sidecar recorded.
3. *A model of a different shape.* Before touching the model, the loader compares every
   tensor's shape and reports each mismatch by name: ``transformer.h.0.attn.c_attn.weight:
   checkpoint has (1152, 384), model expects (768, 256)``.

Tied weights: GPT-2 uses the same matrix for the token embedding and the output layer, so
the state dict lists one tensor under two names. safetensors refuses to store a tensor
twice (it would silently become two tensors on load), so we store it once and record the
second name as an *alias*; loading copies the stored tensor into both names, which in the
model are one and the same ``Parameter``, so the tie survives.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

# Still importable from here (callers meet these errors and checks through this module), but
# documented once, in gptlib.statedict: names re-exported in __all__ would be described twice.
from gptlib.statedict import (  # noqa: F401
    CheckpointError,
    CheckpointMismatchError,
    check_state_dict,
    load_state_dict_checked,
    unwrap_model,
)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_paths",
    "save_model",
    "load_model",
    "encode_bytes_tensor",
    "decode_bytes_tensor",
]

CHECKPOINT_FORMAT = "gptlib-checkpoint-v1"
MODEL_FORMAT = "gptlib-model-v1"


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def encode_bytes_tensor(t: torch.Tensor) -> str:
    """A uint8 tensor (e.g. an RNG state) as a base64 string, so it fits in JSON."""
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def decode_bytes_tensor(s: str) -> torch.Tensor:
    """Inverse of :func:`encode_bytes_tensor`."""
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(tensor_file, sidecar)`` for a checkpoint named ``path``.

    ``runs/x/ckpt``, ``runs/x/ckpt.safetensors`` and ``runs/x/ckpt.json`` all name the
    same checkpoint; a directory means ``<dir>/ckpt``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt"
    if path.suffix in {".safetensors", ".json"}:
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _tmp(path: Path) -> Path:
    # A fixed temp name (not a random one): the loader must be able to find an unfinished
    # sidecar to roll a save forward, and a retry simply overwrites a stale temp file.
    return path.with_name(path.name + ".tmp")


def _fsync_file(path: Path) -> None:
    # os.replace is atomic with respect to names, but the *data* may still sit in the page
    # cache; fsync first so that after a power loss the new name never points at garbage.
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(path, 0o644)  # safetensors creates files readable by their owner only


def _fsync_dir(directory: Path) -> None:
    try:  # makes the renames themselves durable; not possible on every OS, so best effort
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    # Lets meta hold the odd non-JSON value (a Path, a torch.device, a dtype) as a string.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def _dedupe_shared(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split a state dict into tensors to store and ``{alias: stored_name}`` for shared ones."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: set[int] = set()
    for name, t in state.items():
        t = t.detach()
        # Same storage, offset, shape and stride: the very same tensor under another name.
        key = (
            t.device,
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            t.stride(),
        )
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        ptr = (t.device, t.untyped_storage().data_ptr())
        # A *different* view of storage we already hold (rare): store an independent copy,
        # because safetensors refuses tensors that overlap in memory.
        tensors[name] = t.cpu().clone() if ptr in storages else t.cpu().contiguous()
        storages.add(ptr)
    return tensors, aliases


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, with damage reported clearly."""
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {e}"
        ) from e
    return tensors, metadata


# --------------------------------------------------------------------------------------
# Training checkpoints: weights + optimizer state + JSON sidecar
# --------------------------------------------------------------------------------------


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` (and ``optimizer``) to ``<path>.safetensors`` and ``meta`` to ``<path>.json``.

    ``meta`` must be JSON-serialisable (RNG states: use :func:`encode_bytes_tensor`).
    The save is atomic (see the module docstring): if it fails or is interrupted, the
    previous checkpoint at ``path`` is still intact and loadable. Returns the tensor file.
    """
    tensor_path, sidecar_path = checkpoint_paths(path)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    model_tensors, aliases = _dedupe_shared(unwrap_model(model).state_dict())
    tensors = {f"model.{k}": v for k, v in model_tensors.items()}

    optimizer_info = None
    if optimizer is not None:
        # An optimizer state dict is {"state": {param_index: {name: value}}, "param_groups": [...]}.
        # Tensors (Adam's moments, the step count) go into the safetensors file; everything
        # else (hyper-parameters, which parameters are in which group) goes into the JSON.
        opt_state = optimizer.state_dict()
        plain_state: dict[str, dict[str, Any]] = {}
        for index, per_param in opt_state["state"].items():
            for name, value in per_param.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
                else:
                    plain_state.setdefault(str(index), {})[name] = value
        optimizer_info = {"param_groups": opt_state["param_groups"], "plain_state": plain_state}

    checkpoint_id = uuid.uuid4().hex
    tensor_tmp, sidecar_tmp = _tmp(tensor_path), _tmp(sidecar_path)
    try:
        # 1. Write both files under temporary names. Any failure here leaves the old pair alone.
        save_file(
            tensors,
            str(tensor_tmp),
            metadata={"format": CHECKPOINT_FORMAT, "checkpoint_id": checkpoint_id},
        )
        _fsync_file(tensor_tmp)
        sidecar = {
            "format": CHECKPOINT_FORMAT,
            "checkpoint_id": checkpoint_id,
            "tensor_file": tensor_path.name,
            "tensor_bytes": tensor_tmp.stat().st_size,
            "aliases": aliases,
            "optimizer": optimizer_info,
            "meta": dict(meta or {}),
        }
        _write_json(sidecar_tmp, sidecar)
    except BaseException:
        for tmp in (tensor_tmp, sidecar_tmp):
            tmp.unlink(missing_ok=True)
        raise
    # 2. Swap them in, sidecar last. Dying between these two lines is handled by the loader.
    os.replace(tensor_tmp, tensor_path)
    os.replace(sidecar_tmp, sidecar_path)
    _fsync_dir(tensor_path.parent)
    return tensor_path


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint sidecar {path} is unreadable (corrupt?): {e}") from e
    if not isinstance(sidecar, dict) or sidecar.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gptlib checkpoint sidecar")
    return sidecar


def _read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and sidecar of a checkpoint, after checking that the two belong together."""
    tensor_path, sidecar_path = checkpoint_paths(path)
    if not sidecar_path.exists():
        if tensor_path.exists():
            raise CheckpointError(
                f"{tensor_path} has no sidecar {sidecar_path.name}: "
                "not a complete gptlib checkpoint"
            )
        raise CheckpointError(
            f"no checkpoint at {tensor_path.with_suffix('')} "
            f"(looked for {tensor_path.name} and {sidecar_path.name})"
        )
    sidecar = _read_sidecar(sidecar_path)
    tensors, metadata = _read_tensors(tensor_path)
    tensor_id = metadata.get("checkpoint_id")
    if tensor_id != sidecar.get("checkpoint_id"):
        # Interrupted between the two renames of save_checkpoint: the new tensor file is in
        # place and its finished sidecar is still under the temporary name. Finish the save.
        pending = _tmp(sidecar_path)
        if pending.exists():
            try:
                candidate = _read_sidecar(pending)
            except CheckpointError:
                candidate = {}
            if candidate.get("checkpoint_id") == tensor_id:
                os.replace(pending, sidecar_path)
                sidecar = candidate
        if tensor_id != sidecar.get("checkpoint_id"):
            raise CheckpointError(
                f"{tensor_path.name} and {sidecar_path.name} come from different saves "
                f"(ids {tensor_id} vs {sidecar.get('checkpoint_id')}); was one of them copied "
                "or replaced on its own?"
            )
    size = tensor_path.stat().st_size
    if size != sidecar.get("tensor_bytes", size):
        raise CheckpointError(
            f"{tensor_path} is {size} bytes but was saved with "
            f"{sidecar['tensor_bytes']}: truncated or modified"
        )
    return tensors, sidecar


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    Returns the ``meta`` dict that was saved with it. Pass ``model=None`` to read only the
    meta (still verifying the files). Raises :class:`CheckpointError` with an explanation for
    a missing, truncated, mismatched or wrongly shaped checkpoint; the model is left
    untouched in that case.
    """
    tensors, sidecar = _read_checkpoint(path)
    _restore(tensors, sidecar, model, optimizer, source=str(path))
    return sidecar.get("meta", {})


def _restore(
    tensors: dict[str, torch.Tensor],
    sidecar: dict[str, Any],
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    source: str,
) -> None:
    if model is not None:
        state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        for alias, stored in sidecar.get("aliases", {}).items():
            state[alias] = state[stored]
        load_state_dict_checked(model, state)
    if optimizer is not None:
        info = sidecar.get("optimizer")
        if info is None:
            raise CheckpointError(f"checkpoint {source} holds no optimizer state")
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        for index, values in info["plain_state"].items():
            per_param.setdefault(int(index), {}).update(values)
        groups = [
            # JSON turned tuples (betas) into lists; give them back their original type.
            {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
            for g in info["param_groups"]
        ]
        try:
            optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"optimizer state in {source} does not fit this optimizer: {e}"
            ) from e


# --------------------------------------------------------------------------------------
# Model files: weights + GPTConfig in one safetensors file
# --------------------------------------------------------------------------------------


def _config_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


def save_model(path: str | os.PathLike, model: torch.nn.Module, config: Any = None) -> Path:
    """Save ``model``'s weights and its config (default: ``model.config``) to one file.

    The config is stored as JSON in the safetensors metadata, so :func:`load_model` can
    rebuild the model from the file alone. Written atomically (temp file, then rename).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = unwrap_model(model)
    config = config if config is not None else getattr(model, "config", None)
    if config is None:
        raise ValueError("save_model needs the model's config (pass config=...)")
    tensors, aliases = _dedupe_shared(model.state_dict())
    metadata = {
        "format": MODEL_FORMAT,
        "config": json.dumps(_config_dict(config), default=_json_default),
        "aliases": json.dumps(aliases),
    }
    tmp = _tmp(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        _fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def load_model(
    path: str | os.PathLike, device: str | torch.device | None = None, eval_mode: bool = True
) -> torch.nn.Module:
    """Rebuild a :class:`~gptlib.model.GPT` from a :func:`save_model` file.

    Also accepts a training checkpoint (``runs/x/ckpt``) whose meta holds ``model_config``,
    as :func:`gptlib.train.train` writes. The model is returned in eval mode (dropout off)
    unless ``eval_mode=False``.
    """
    from gptlib.model import (  # imported here: checkpoint.py must not need model.py
        GPT,
        GPTConfig,
    )

    path = Path(path)
    tensor_path, sidecar_path = checkpoint_paths(path)
    if path.suffix == ".safetensors" or not sidecar_path.exists():
        file = path if path.suffix == ".safetensors" else tensor_path
        tensors, metadata = _read_tensors(file)
        if metadata.get("format") != MODEL_FORMAT:
            raise CheckpointError(
                f"{file} is not a gptlib model file (no config in its metadata); "
                "for a training checkpoint pass the name without the extension"
            )
        config = GPTConfig(**json.loads(metadata["config"]))
        for alias, stored in json.loads(metadata.get("aliases", "{}")).items():
            tensors[alias] = tensors[stored]
        model = GPT(config)
        load_state_dict_checked(model, tensors, source=str(file.name))
    else:
        tensors, sidecar = _read_checkpoint(path)
        model_config = sidecar.get("meta", {}).get("model_config")
        if model_config is None:
            raise CheckpointError(f"checkpoint {path} has no model_config in its meta")
        model = GPT(GPTConfig(**model_config))
        _restore(tensors, sidecar, model, None, source=str(path))
    if device is not None:
        model.to(device)
    return model.eval() if eval_mode else model
