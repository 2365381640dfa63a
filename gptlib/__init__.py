"""gptlib: the small library behind "GPT from attention to RLHF".

One module per idea: device, attention, model, checkpoint, tokenizer, data, train,
sampling, heads (classification/reward heads), mlm (BERT-style masking), tasks (tasks
written as text), icl (in-context learning), codex (pass@k and a sandbox for untrusted code),
embeddings (contrastive encoders and retrieval), rlhf (SFT, reward model, PPO, DPO),
compress (quantization and pruning), viz, checks, paths.
Importing the package is cheap: submodules are imported on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "attention", "checkpoint", "checks", "codex", "compress", "data", "device", "embeddings", "heads",
    "icl", "mlm", "model", "passk", "paths", "rlhf", "sampling", "tasks", "tokenizer", "train", "viz",
}


def __getattr__(name: str):
    # Lazy submodule import keeps `import gptlib` fast (torch is imported only when needed).
    if name in _SUBMODULES:
        return importlib.import_module(f"gptlib.{name}")
    raise AttributeError(f"module 'gptlib' has no attribute {name!r}")
