"""The book's shipped models and measurements: one folder format, one loader.

Every asset is a folder under ``assets/`` named by its path there (``rlhf/sft``,
``icl/induction-2layer``). A recipe (:mod:`gptlib.recipes`) makes it, and the folder holds:

``meta.json``
    ``name``, ``command`` (the exact command that rebuilds it), ``settings`` (fully
    resolved), ``metrics`` (the numbers the chapters quote), ``history`` (curves),
    ``wall_s``, ``machine``, ``torch``, ``created``, ``format``; for a model also
    ``model`` = ``{"builder": "module:callable", "config": {...}}``: the callable
    builds an untrained model from the config, and the weights fill it.
``model.safetensors``
    the weights (absent for an asset that holds only measurements).
``tokenizer.json``
    the tokenizer, any kind :func:`gptlib.tokenizer.tokenizer_from_dict` reads.
``<other>.safetensors``
    extra tensors a recipe needs (read with :meth:`Asset.tensors`).

::

    >>> from gptlib import assets
    >>> a = assets.load("gpt1/shakespeare")          # doctest: +SKIP
    >>> a.model, a.tokenizer, a.meta["metrics"]       # doctest: +SKIP

A missing asset, or one written in an older format, raises :class:`AssetError` naming the
command that makes it. Folders are written to a temporary sibling and renamed into place,
so an interrupted recipe never leaves half an asset behind.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from gptlib.paths import ASSETS

__all__ = [
    "Asset",
    "AssetError",
    "names",
    "load",
    "save",
    "read_meta",
    "machine_description",
    "FORMAT",
    "META_KEYS",
]

#: Version of the folder format; an asset with another version is stale.
FORMAT = "gptlib-asset-v1"
#: Keys every ``meta.json`` has.
META_KEYS = (
    "name",
    "command",
    "settings",
    "metrics",
    "history",
    "wall_s",
    "machine",
    "torch",
    "created",
    "format",
)


class AssetError(RuntimeError):
    """An asset is missing, stale or does not fit its model; the message says how to remake it."""


@dataclass
class Asset:
    """A loaded asset: ``model`` is in eval mode (None for a measurements-only asset)."""

    name: str
    path: Path
    meta: dict[str, Any]
    model: torch.nn.Module | None = None
    tokenizer: Any = None
    _device: Any = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta["metrics"]

    @property
    def history(self) -> Any:
        return self.meta["history"]

    @property
    def command(self) -> str:
        return self.meta["command"]

    def tensors(self, file: str) -> dict[str, torch.Tensor]:
        """Extra tensors shipped with the asset, e.g. ``asset.tensors("head")``."""
        from safetensors.torch import load_file

        path = self.path / (file if file.endswith(".safetensors") else file + ".safetensors")
        if not path.exists():
            raise AssetError(
                f"asset {self.name!r} has no {path.name}; remake it with: {self.command}"
            )
        device = str(self._device) if self._device is not None else "cpu"
        return {
            k: v.float() if v.is_floating_point() else v
            for k, v in load_file(str(path), device=device).items()
        }


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else ASSETS


def names(root: str | os.PathLike | None = None) -> list[str]:
    """Every asset under ``root`` (default ``assets/``): folder paths holding a ``meta.json``."""
    base = _root(root)
    return sorted(
        p.parent.relative_to(base).as_posix()
        for p in base.rglob("meta.json")
        if ".tmp-" not in p.as_posix()
    )


def _maker_of(name: str) -> str:
    """The command that makes ``name``, from the recipe registry (without importing torch code)."""
    from gptlib.recipes.registry import command_for  # registry is import-light: no cycle

    return command_for(name)


def read_meta(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``meta.json`` of an asset, checked for the current format."""
    path = _root(root) / name
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise AssetError(
            f"asset {name!r} is missing (no {meta_path}); make it with: {_maker_of(name)}"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise AssetError(
            f"asset {name!r} is stale (format {meta.get('format')!r}, expected {FORMAT!r}); "
            f"remake it with: {meta.get('command') or _maker_of(name)}"
        )
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise AssetError(
            f"asset {name!r} is stale: meta.json lacks {missing}; "
            f"remake it with: {meta.get('command') or _maker_of(name)}"
        )
    return meta


def _resolve(builder: str) -> Any:
    """``"gptlib.model:GPT.from_config"`` -> that callable."""
    module, _, qualname = builder.partition(":")
    if not module.startswith("gptlib.") or not qualname:
        raise AssetError(f"model builder {builder!r} must be 'gptlib.<module>:<callable>'")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load(
    name: str, device: str | torch.device | None = None, root: str | os.PathLike | None = None
) -> Asset:
    """Load asset ``name`` (e.g. ``"rlhf/sft"``): model in eval mode on ``device``, tokenizer,
    meta. ``root`` is the folder of assets (default ``assets/``)."""
    from safetensors.torch import load_file

    from gptlib.statedict import load_state_dict_checked
    from gptlib.tokenizer import load_tokenizer

    meta = read_meta(name, root)
    path = _root(root) / name
    model = None
    if meta.get("model"):
        weights = path / "model.safetensors"
        if not weights.exists():
            raise AssetError(
                f"asset {name!r} has no model.safetensors; remake it with: {meta['command']}"
            )
        model = _resolve(meta["model"]["builder"])(meta["model"]["config"])
        state = {
            k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()
        }
        for alias, stored in meta["model"].get("aliases", {}).items():
            state[alias] = state[stored]
        try:
            load_state_dict_checked(model, state, source=f"asset {name}")
        except Exception as e:  # shape mismatch: the code changed since the asset was made
            raise AssetError(
                f"asset {name!r} does not fit its model ({e}); remake it with: {meta['command']}"
            ) from None
        if device is not None:
            model.to(device)
        model.eval()
    tok_path = path / "tokenizer.json"
    tokenizer = load_tokenizer(tok_path) if tok_path.exists() else None
    return Asset(name=name, path=path, meta=meta, model=model, tokenizer=tokenizer, _device=device)


def machine_description() -> str:
    """``"x86_64, 2 cores, 1 torch threads"``: where an asset was made."""
    return (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )


def _tied(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store a tensor shared under two names once, and record the second name as an alias."""
    seen: dict[int, str] = {}
    tensors, aliases = {}, {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr() if value.numel() else id(value)
        if ptr in seen and value.shape == state[seen[ptr]].shape:
            aliases[key] = seen[ptr]
        else:
            seen[ptr] = key
            tensors[key] = value.detach().cpu().contiguous()
    return tensors, aliases


def save(
    name: str,
    *,
    command: str,
    settings: Mapping[str, Any],
    metrics: Mapping[str, Any],
    history: Any = None,
    wall_s: float,
    model: torch.nn.Module | None = None,
    builder: str | None = None,
    model_config: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    tensors: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    root: str | os.PathLike | None = None,
    half: bool = False,
) -> Path:
    """Write asset ``name`` under ``root`` atomically (a temporary folder renamed into place).

    ``builder``/``model_config`` say how :func:`load` rebuilds ``model``; ``tensors`` maps a
    file stem to extra tensors; ``half=True`` stores floating weights in fp16 (half the size,
    loaded back as fp32).
    """
    from safetensors.torch import save_file

    final = _root(root) / name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta: dict[str, Any] = {
            "name": name,
            "command": command,
            "settings": dict(settings),
            "metrics": dict(metrics),
            "history": history if history is not None else {},
            "wall_s": round(float(wall_s), 1),
            "machine": machine_description(),
            "torch": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "format": FORMAT,
        }
        if model is not None:
            if builder is None or model_config is None:
                raise ValueError(
                    "saving a model needs builder= and model_config= (how load rebuilds it)"
                )
            state, aliases = _tied(model.state_dict())
            if half:
                state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
            save_file(state, str(tmp / "model.safetensors"))
            meta["model"] = {"builder": builder, "config": dict(model_config), "aliases": aliases}
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        for stem, extra in (tensors or {}).items():
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in extra.items()},
                str(tmp / f"{stem}.safetensors"),
            )
        (tmp / "meta.json").write_text(
            json.dumps(meta, indent=1, default=_json_default) + "\n", encoding="utf-8"
        )
        for path in tmp.iterdir():  # readable by everyone, like any file a checkout holds
            path.chmod(0o644)
        tmp.chmod(0o755)
        old = None
        if final.exists():
            old = final.parent / f".tmp-old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot store {type(obj).__name__} in meta.json")
