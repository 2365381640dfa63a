"""gptlib: the small library behind "GPT from attention to RLHF".

One module per idea: device, attention, model, checkpoint, tokenizer, data, train,
sampling, evaluate, heads (classification/reward heads), mlm (BERT-style masking), tasks
(tasks written as text), icl (in-context learning), codex and sandbox (pass@k, untrusted
code), fim, embeddings (contrastive encoders and retrieval), rlhf (SFT, reward model, PPO,
DPO), compress (quantization and pruning), viz, checks, assets (shipped models), recipes
(what makes them), stats (intervals over a few seeds), settings, paths.
Importing the package is cheap: submodules are imported on first use.
"""

from __future__ import annotations

import importlib
import pkgutil

__version__ = "0.1.0"

# Every module and subpackage of gptlib, found on disk (not a hand-kept list).
_SUBMODULES = frozenset(
    m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
)


def __getattr__(name: str):
    # Lazy submodule import keeps `import gptlib` fast (torch is imported only when needed).
    if name in _SUBMODULES:
        return importlib.import_module(f"gptlib.{name}")
    raise AttributeError(f"module 'gptlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
