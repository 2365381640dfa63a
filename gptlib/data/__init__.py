"""Data: the corpora of the book, and how they become training batches.

One idea a module (all re-exported here, so ``from gptlib.data import get_batch`` works):

- :mod:`gptlib.data.corpora`: Shakespeare's plays and the Python standard library, offline.
- :mod:`gptlib.data.batches`: whole-document splits, encoding, random windows, mixtures.
- :mod:`gptlib.data.datasets`: the ready-made datasets (``train_val_tokens(name)``).
- :mod:`gptlib.data.codeclean`: the Codex filters and the whole cleaning pipeline.
- :mod:`gptlib.data.dedup`: exact and near (MinHash) duplicates.
"""

from gptlib.data.batches import *  # noqa: F403
from gptlib.data.batches import __all__ as _batches
from gptlib.data.codeclean import *  # noqa: F403
from gptlib.data.codeclean import __all__ as _codeclean
from gptlib.data.corpora import *  # noqa: F403
from gptlib.data.corpora import __all__ as _corpora
from gptlib.data.datasets import *  # noqa: F403
from gptlib.data.datasets import __all__ as _datasets
from gptlib.data.dedup import *  # noqa: F403
from gptlib.data.dedup import __all__ as _dedup

__all__ = [*_corpora, *_batches, *_datasets, *_codeclean, *_dedup]
