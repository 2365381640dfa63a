"""GPT-1's fine-tuning grid (chapter 4): pre-trained vs from scratch, with the LM term or not.

Every run is :func:`gptlib.finetune.fine_tune` on the word-order task, from ``gpt1/shakespeare``
or from fresh weights of its shape, for each label count and seed (a seed fixes the labelled
examples drawn, the new weights and the batches). Writes ``gpt1/finetune-runs``: the accuracy,
training curve and LM loss of every run, and the LM loss of the pre-trained model before any
fine-tuning.
"""

from __future__ import annotations

from gptlib.recipes.context import RecipeContext


def run(ctx: RecipeContext) -> None:
    import torch

    from gptlib import assets, finetune
    from gptlib.heads import SequenceClassifier

    torch.set_num_threads(1)
    s = ctx.settings
    shipped = assets.load("gpt1/shakespeare")
    data = shipped.meta["settings"]["models"]["gpt1/shakespeare"]["data"]
    task = finetune.word_order_task(shipped.tokenizer, data, n_test=s["n_test"] or None)
    conditions = [("pre-trained", 0.0), ("from scratch", 0.0), ("pre-trained", s["aux_lam"])]
    runs = []
    for n in s["label_counts"]:
        for init, lam in conditions:
            if lam and n < s["aux_from"]:
                continue
            for seed in s["seeds"]:
                runs.append(finetune.fine_tune(shipped.model, task, init, n, seed, lam,
                                               steps=s["steps"], batch=s["batch"],
                                               pool=s["pool"]))
                r = runs[-1]
                print(f"{n:5d} labels, {init}, lambda {lam}, seed {seed}: "
                      f"accuracy {r['accuracy']:.3f}", flush=True)
    clf = SequenceClassifier(shipped.model, 2)
    metrics = {"lm_before": finetune.lm_loss_on(clf, task.originals),
               "n_test": len(task.y_test), "n_pool": len(task.y_pool), "runs": len(runs)}
    ctx.save("gpt1/finetune-runs", metrics=metrics, history={"runs": runs})
