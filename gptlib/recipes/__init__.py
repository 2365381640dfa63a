"""Recipes: the code that trains and measures every shipped asset.

One module per asset family (``gptlib.recipes.gpt1``, ``...icl``, ``...rlhf``), each with a
``run(ctx)`` function and a settings file ``gptlib/configs/NAME.toml``::

    python -m gptlib.recipes --list
    python -m gptlib.recipes NAME [--quick] [--full] [--out DIR] [--key value ...]

``--quick`` is a seconds-long run (the tests run it and load what it writes), ``--full`` the
GPU-sized one; neither changes the code, only the settings. Library modules hold what the
chapters call; recipes hold the experiment that uses them (argparse, loops over seeds,
process pools), so none of that lives in the library.
"""
# Kept import-free: gptlib.assets reads gptlib.recipes.registry, and must not pull in the
# runner (which imports gptlib.assets back).
