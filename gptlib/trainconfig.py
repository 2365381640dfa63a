"""Every knob of a training run: :class:`TrainConfig`, read from TOML or a settings table.

The TOML file's top level holds :class:`TrainConfig` fields, its ``[model]`` table the
:class:`~gptlib.model.GPTConfig` and ``[data]`` the dataset (``gptlib.data.train_val_tokens``).
Keys are checked one by one, with a "did you mean" for a misspelt one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from gptlib.settings import check_key, read_toml

__all__ = ["TrainConfig"]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every knob of a training run. The defaults are the book's Shakespeare run."""

    # How long, and how much data per step.
    max_iters: int = 5000  # optimizer steps
    batch_size: int = 64  # sequences per micro-batch (per process under DDP)
    block_size: int = 256  # tokens per sequence
    grad_accum_steps: int = 1  # micro-batches summed into one optimizer step

    # AdamW and the learning-rate schedule.
    lr: float = 1e-3  # peak learning rate, reached after warm-up
    min_lr: float = 1e-4  # floor of the cosine decay (~lr / 10, as in Chinchilla)
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # where the cosine reaches min_lr; None = max_iters
    weight_decay: float = 0.1  # applied to matrices only (see GPT.configure_optimizer)
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping

    # Measuring and reporting.
    eval_interval: int = 250  # evaluate every this many steps (and at the end)
    eval_iters: int = 200  # batches averaged per evaluation
    eval_train: bool = False  # also evaluate on training data (same procedure as val)
    log_interval: int = 10  # history entry (mean train loss) every this many steps
    progress: bool = True  # tqdm progress bar

    # Where and how it runs.
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    compile: bool = False  # torch.compile (pays off only for long GPU runs)
    seed: int = 1337
    device: str | None = None  # None: get_device() (cuda > mps > cpu)
    out_dir: str | None = None  # None: no checkpoints
    ckpt_interval: int | None = None  # checkpoint every this many steps; None = eval_interval

    # Not used by train() itself: the CLI builds the model and the data from these tables.
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # TOML and JSON give lists
        # Values from TOML or the command line come typed by their spelling: "lr = 1" is an
        # int, "--out_dir 2024" too. Convert to the declared type so the config is predictable.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif f.type == "str | None" and value is not None and not isinstance(value, str):
                setattr(self, f.name, str(value))
        for name in (
            "max_iters",
            "batch_size",
            "block_size",
            "grad_accum_steps",
            "eval_interval",
            "eval_iters",
            "log_interval",
        ):
            value = getattr(self, name)
            smallest = 0 if name == "max_iters" else 1
            if not isinstance(value, int) or value < smallest:
                raise ValueError(
                    f"TrainConfig.{name} must be an integer >= {smallest}, got {value!r}"
                )
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) is larger than lr ({self.lr})")

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters if self.lr_decay_iters is not None else self.max_iters

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """Read a config file, then apply ``overrides``.

        Override keys are field names (``max_iters=200``) or dotted names for the tables
        (``**{"model.n_layer": 2, "data.name": "shakespeare_bpe"}``). An unknown key raises
        :class:`~gptlib.settings.SettingsError` (a ``ValueError``) listing the valid ones; a
        missing file raises it too, in one line.
        """
        return cls.from_dict(read_toml(path), **overrides)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        """A config from a settings table (as read from TOML), checked key by key."""
        values = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
        values.setdefault("model", {})
        values.setdefault("data", {})
        for key in values:
            if key not in ("model", "data"):
                _check_key(key, _field_types(), where="the settings")
        for key in values["model"]:
            _check_key(key, _model_fields(), where="the [model] table")
        for key in values["data"]:
            _check_key(key, _data_fields(), where="the [data] table")
        for key, value in overrides.items():
            _apply_override(values, key, value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_types() -> dict[str, Any]:
    return {
        f.name: f.type for f in dataclasses.fields(TrainConfig) if f.name not in ("model", "data")
    }


def _check_key(key: str, valid: Mapping[str, Any], where: str) -> None:
    check_key(key, list(valid), where)


def _model_fields() -> dict[str, Any]:
    from gptlib.model import GPTConfig

    return {f.name: f.type for f in dataclasses.fields(GPTConfig)}


def _data_fields() -> dict[str, Any]:
    import inspect

    from gptlib.data import train_val_tokens

    return {
        name: p.annotation for name, p in inspect.signature(train_val_tokens).parameters.items()
    }


def _apply_override(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``values[key] = value``, where ``key`` may be ``model.x`` or ``data.x``."""
    if "." in key:
        table, sub = key.split(".", 1)
        if table not in ("model", "data"):
            raise ValueError(
                f"unknown table {table!r} in override {key!r}: use model.<field> or data.<field>"
            )
        valid = _model_fields() if table == "model" else _data_fields()
        _check_key(sub, valid, where=f"the [{table}] table")
        values[table][sub] = value
        return
    if key in ("model", "data") and isinstance(value, Mapping):
        values[key].update(value)
        return
    _check_key(key, _field_types(), where="the overrides")
    values[key] = value
