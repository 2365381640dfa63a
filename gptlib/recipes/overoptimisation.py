"""Chapter 13's over-optimisation measurement (Gao, Schulman and Hilton 2022), over a pool.

The SFT policy (``rlhf/sft``) answers ``test_prompts`` held-out prompts ``pool`` times each;
the world's labeller gives the gold reward. Proxy reward models, linear heads on the SFT
model's frozen features, learn from ``sizes`` comparisons (the labeller's noisy rankings of
SFT samples of train prompts), ``seeds`` random subsets per size. For each proxy, best-of-n
and the KL-regularised optimum (what PPO with KL coefficient beta converges to) are exact
over the pool (:mod:`gptlib.rlhf.overoptimisation`): gold and proxy reward against KL. Then
Gao's functional forms are fitted, the peak KL per size is read off, and an ensemble of
``members`` proxies (mean and min of their scores) is compared with a single one.

Then a trained policy (``[ppo_trained]``): PPO from the SFT policy (value model from
``rlhf/reward``, as recipe ``ppo`` does) against one proxy trained the same way on
``comparisons`` comparisons, KL coefficient ``ppo.init_kl_coef``, measured every
``eval_every`` steps on held-out test prompts (gold, proxy, KL from its own samples), one run
per seed. ``--only ppo_trained`` runs just that part and adds it to the existing asset (in
``--out``, else the shipped one); the full command makes both.

Written: ``rlhf/overoptimisation`` (measurements only, in ``meta.json``).
"""

from __future__ import annotations

import random
import statistics
import time

from gptlib.recipes.context import RecipeContext


def _curves(proxy, gold, groups, s: dict) -> tuple[dict, dict]:
    from gptlib.rlhf.overoptimisation import pool_curve

    bon = pool_curve(proxy, gold, ns=s["ns"], groups=groups, per_prompt=True)
    rl = pool_curve(proxy, gold, betas=s["betas"], groups=groups, per_prompt=True)
    return bon, rl


def _mean_curves(curves: list[dict]) -> dict:
    """Seed-mean of ``kl``, ``gold``, ``proxy`` and per-prompt gold; per-seed gold kept."""
    out = {k: curves[0][k] for k in ("n", "beta", "kl_bound") if k in curves[0]}
    for key in ("kl", "gold", "proxy"):
        out[key] = [statistics.fmean(c[key][i] for c in curves) for i in range(len(curves[0][key]))]
    out["gold_seeds"] = [c["gold"] for c in curves]
    out["kl_seeds"] = [c["kl"] for c in curves]
    out["per_prompt_gold"] = [
        [
            statistics.fmean(c["per_prompt_gold"][i][j] for c in curves)
            for j in range(len(curves[0]["per_prompt_gold"][i]))
        ]
        for i in range(len(curves[0]["kl"]))
    ]
    return out


def _peak(curve: dict) -> dict:
    i = max(range(len(curve["gold"])), key=lambda j: curve["gold"][j])
    return {"index": i, "kl": curve["kl"][i], "gold": curve["gold"][i]}


def _fit(curve: dict, form: str, gold0: float) -> dict:
    """Gao's form fitted to the gold gain over the SFT policy's mean gold ``gold0``."""
    from gptlib.rlhf.overoptimisation import fit_gao, gao_peak

    alpha, beta = fit_gao(curve["kl"], [g - gold0 for g in curve["gold"]], form)
    return {
        "form": form,
        "alpha": alpha,
        "beta": beta,
        "gold0": gold0,
        "peak_kl": gao_peak(alpha, beta, form),
    }


def _fall(curve: dict) -> dict:
    """Gold at the empirical peak minus gold at the largest KL, with a bootstrap CI over prompts."""
    from gptlib.rlhf.evaluation import paired_bootstrap

    peak = _peak(curve)
    diff, lo, hi = paired_bootstrap(
        curve["per_prompt_gold"][peak["index"]], curve["per_prompt_gold"][-1]
    )
    return {
        "peak_kl": peak["kl"],
        "peak_gold": peak["gold"],
        "last_kl": curve["kl"][-1],
        "last_gold": curve["gold"][-1],
        "fall": diff,
        "ci95": [lo, hi],
    }


def _strip(curve: dict) -> dict:
    return {k: v for k, v in curve.items() if k != "per_prompt_gold"}


def _sample(model, tok, prompts, k: int, s: dict, gen) -> tuple[list[str], list[str]]:
    """``k`` samples of the policy per prompt, at the recipe's temperature and length:
    (each formatted prompt ``k`` times, the samples in the same order)."""
    from gptlib.rlhf.sft import generate_responses

    texts = [p.formatted for p in prompts for _ in range(k)]
    flat = generate_responses(
        model,
        tok,
        texts,
        s["max_new_tokens"],
        temperature=s["temperature"],
        generator=gen,
        batch_size=512,
    )
    return texts, flat


def _grouped(flat: list[str], k: int) -> list[list[str]]:
    return [flat[i : i + k] for i in range(0, len(flat), k)]


def _ppo_trained(s: dict, source, command: str) -> dict:
    """PPO against one proxy, measured at checkpoints: ``metrics["ppo_trained"]``."""
    import copy

    import torch

    from gptlib import assets
    from gptlib.rlhf.evaluation import paired_bootstrap
    from gptlib.rlhf.overoptimisation import (
        fit_proxy,
        head_state,
        labelled_pairs,
        policy_point,
        proxy_reward_fn,
    )
    from gptlib.rlhf.ppo import PolicyWithValue, PPOConfig, PPOTrainer
    from gptlib.rlhf.reward import response_features
    from gptlib.rlhf.world import ToyWorld

    torch.set_num_threads(1)
    p, t0 = s["ppo_trained"], time.perf_counter()
    sft = assets.load("rlhf/sft", root=source)
    model, tok = sft.model.eval(), sft.tokenizer
    rm = assets.load("rlhf/reward", root=source).model.eval()
    world = ToyWorld(s["world_seed"])
    # the proxy: as the family's (same train prompts, k, labeller noise, fit), own SFT samples
    train = world.prompts("train", p["proxy_prompts"], seed=7)
    gen = torch.Generator().manual_seed(p["sample_seed"])
    texts, flat = _sample(model, tok, train, s["k"], s, gen)
    pairs = labelled_pairs(world, train, _grouped(flat, s["k"]), noise=s["noise"])
    m = min(p["comparisons"], len(pairs))
    sub = random.Random(f"ppo-proxy-{m}").sample(pairs, m)
    head = fit_proxy(response_features(model, tok, texts, flat), sub, iters=s["fit_iters"])
    reward_fn = proxy_reward_fn(model, tok, head)
    test = world.prompts("test", p["eval_prompts"], seed=s["eval_seed"])
    ppo_prompts = [q.formatted for q in world.prompts("train", p["train_prompts"], seed=1)]
    eos = tok.encode("\n")[0]
    t_proxy = time.perf_counter() - t0
    print(f"[overoptimisation] PPO proxy: {m} of {len(pairs)} comparisons ({t_proxy:.0f} s)")
    runs = []
    for seed in p["seeds"]:
        policy = PolicyWithValue(copy.deepcopy(model), critic=rm)
        cfg = PPOConfig(**{**p["ppo"], "seed": seed})
        trainer = PPOTrainer(policy, model, tok, ppo_prompts, reward_fn, cfg, eos_token=eos)
        points = []
        for step in range(p["steps"] + 1):
            if step:
                trainer.step()
            if step % p["eval_every"] == 0 or step == p["steps"]:
                pt = policy_point(
                    policy.lm,
                    model,
                    tok,
                    world,
                    test,
                    reward_fn,
                    samples=p["eval_samples"],
                    max_new_tokens=cfg.max_new_tokens,
                    seed=p["eval_seed"],
                )
                points.append({"step": step, **pt})
                print(
                    f"[overoptimisation] PPO seed {seed} step {step}: KL {pt['kl']:.2f} "
                    f"gold {pt['gold']:.3f} proxy {pt['proxy']:.2f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
        runs.append(points)
    steps = [pt["step"] for pt in runs[0]]
    out: dict = {
        "kind": "PPO from rlhf/sft against one proxy, measured at checkpoints",
        "step": steps,
        "seeds": list(p["seeds"]),
    }
    for key in ("kl", "gold", "proxy"):
        per_seed = [[pt[key] for pt in r] for r in runs]
        out[f"{key}_seeds"] = per_seed
        out[key] = [statistics.fmean(v[i] for v in per_seed) for i in range(len(steps))]
    per_prompt = [  # seed-mean gold per prompt, one list per checkpoint
        [statistics.fmean(vals) for vals in zip(*(r[i]["per_prompt_gold"] for r in runs))]
        for i in range(len(steps))
    ]
    i_peak = max(range(len(steps)), key=lambda i: out["gold"][i])
    out["peak"] = {
        "index": i_peak,
        "step": steps[i_peak],
        "kl": out["kl"][i_peak],
        "gold": out["gold"][i_peak],
    }
    rise = paired_bootstrap(per_prompt[i_peak], per_prompt[0])
    fall = paired_bootstrap(per_prompt[i_peak], per_prompt[-1])
    out["rise"] = {"diff": rise[0], "ci95": [rise[1], rise[2]]}
    out["fall"] = {"diff": fall[0], "ci95": [fall[1], fall[2]]}
    out["seed_peaks"] = [
        {"step": steps[j], "kl": kl[j], "gold": g[j]}
        for kl, g in zip(out["kl_seeds"], out["gold_seeds"])
        for j in [max(range(len(steps)), key=lambda i, g=g: g[i])]
    ]
    out["seed_falls"] = [max(g) - g[-1] for g in out["gold_seeds"]]  # each seed's own peak
    out["per_prompt_gold"] = {
        "start": per_prompt[0],
        "peak": per_prompt[i_peak],
        "last": per_prompt[-1],
    }
    if len(steps) >= 3 and sum(kl > 0 for kl in out["kl"]) >= 2:
        out["fit"] = _fit(out, "rl", out["gold"][0])
    out.update(
        kl_estimator="mean over the policy's sampled responses of "
        "sum_t log pi(y_t) - log pi_SFT(y_t) (nats per response)",
        eval={
            "prompts": len(test),
            "samples": p["eval_samples"],
            "seed": p["eval_seed"],
            "max_new_tokens": p["ppo"]["max_new_tokens"],
        },
        proxy_model={
            "comparisons": m,
            "available": len(pairs),
            "prompts": len(train),
            "head": head_state(head),
        },
        ppo={k: v for k, v in p["ppo"].items()},
        steps=p["steps"],
        command=command,
        wall_s=time.perf_counter() - t0,
    )
    return out


def run(ctx: RecipeContext) -> None:
    import torch

    from gptlib import assets
    from gptlib.rlhf.evaluation import paired_bootstrap
    from gptlib.rlhf.overoptimisation import (
        fit_proxy,
        labelled_pairs,
        pool_curve,
        pool_groups,
        proxy_ensemble,
    )
    from gptlib.rlhf.reward import response_features
    from gptlib.rlhf.world import ToyWorld

    torch.set_num_threads(1)
    s, t0 = ctx.settings, time.perf_counter()
    if s["headline"] not in s["sizes"]:
        raise ValueError(f"headline = {s['headline']} must be one of sizes = {s['sizes']}")
    if s["only"] not in ("", "ppo_trained"):
        raise ValueError(
            f"--only {s['only']!r}: the only part this recipe runs alone is 'ppo_trained' "
            "(leave it empty to run everything)"
        )
    source = ctx.root_of("rlhf/sft")
    if s["only"] == "ppo_trained":
        # add the trained-PPO curve to the existing measurement (in --out, else the shipped one)
        old = assets.load("rlhf/overoptimisation", root=ctx.root_of("rlhf/overoptimisation"))
        metrics = dict(old.meta["metrics"])
        metrics["ppo_trained"] = _ppo_trained(s, source, ctx.command)
        # the full command makes both parts (each is seeded on its own); its wall time is the sum
        assets.save(
            "rlhf/overoptimisation",
            command=old.meta["command"],
            root=ctx.out,
            settings={**s, "only": ""},
            metrics=metrics,
            wall_s=old.meta["wall_s"]
            - old.meta["metrics"].get("ppo_trained", {}).get("wall_s", 0.0)
            + metrics["ppo_trained"]["wall_s"],
        )
        return
    sft = assets.load("rlhf/sft", root=source)
    model, tok = sft.model.eval(), sft.tokenizer
    world = ToyWorld(s["world_seed"])
    gen = torch.Generator().manual_seed(s["eval_seed"])

    def sample(prompts, k):
        texts, flat = _sample(model, tok, prompts, k, s, gen)
        return texts, _grouped(flat, k)

    # the pool: the SFT policy's answers to held-out prompts, scored by the labeller
    test = world.prompts("test", s["test_prompts"], seed=s["eval_seed"])
    N = s["pool"]
    test_texts, pool = sample(test, N)
    groups = pool_groups(pool)
    gold = torch.tensor(
        [[world.gold_reward(p, r) for r in row] for p, row in zip(test, pool)], dtype=torch.float64
    )
    gold0 = float(gold.mean())
    pool_feats = response_features(model, tok, test_texts, [r for row in pool for r in row])
    # the comparisons: SFT samples of train prompts, ranked by the noisy labeller
    train = world.prompts("train", s["train_prompts"], seed=7)
    train_texts, train_samples = sample(train, s["k"])
    all_pairs = labelled_pairs(world, train, train_samples, noise=s["noise"], seed=0)
    train_feats = response_features(
        model, tok, train_texts, [r for row in train_samples for r in row]
    )
    t_sampling = time.perf_counter() - t0
    print(
        f"[overoptimisation] pool {len(test)}x{N}, {len(all_pairs)} comparisons "
        f"({t_sampling:.0f} s)",
        flush=True,
    )

    def scores(heads) -> torch.Tensor:
        with torch.no_grad():
            return (
                torch.stack([h(pool_feats).squeeze(-1) for h in heads])
                .double()
                .view(len(heads), len(test), N)
            )

    sizes = [min(m, len(all_pairs)) for m in s["sizes"]]
    headline = min(s["headline"], len(all_pairs))
    by_size: dict[int, dict] = {}
    ensemble_curves: dict[str, list] = {"single": [], "mean": [], "min": []}
    examples = []
    for m in sizes:
        bons, rls = [], []
        for seed in s["seeds"]:
            sub = random.Random(f"subset-{m}-{seed}").sample(all_pairs, m)
            single = scores([fit_proxy(train_feats, sub, iters=s["fit_iters"], seed=seed)])[0]
            bon, rl = _curves(single, gold, groups, s)
            bons.append(bon)
            rls.append(rl)
            if m == headline:
                members = scores(
                    proxy_ensemble(
                        train_feats, sub, s["members"], iters=s["fit_iters"], seed=100 * seed
                    )
                )
                ensemble_curves["single"].append((bon, rl))
                ensemble_curves["mean"].append(_curves(members.mean(0), gold, groups, s))
                ensemble_curves["min"].append(_curves(members.min(0).values, gold, groups, s))
                if seed == s["seeds"][0]:
                    for i in range(min(s["n_examples"], len(test))):
                        top, best = int(single[i].argmax()), int(gold[i].argmax())
                        examples.append(
                            {
                                "prompt": test[i].text,
                                "kind": test[i].kind,
                                "proxy_pick": pool[i][top],
                                "proxy_pick_gold": float(gold[i, top]),
                                "gold_pick": pool[i][best],
                                "gold_pick_gold": float(gold[i, best]),
                            }
                        )
        bon_m, rl_m = _mean_curves(bons), _mean_curves(rls)
        per_seed_peaks = [_peak(c)["kl"] for c in bons]
        by_size[m] = {
            "best_of_n": bon_m,
            "ppo": rl_m,
            "fit_bon": _fit(bon_m, "bon", gold0),
            "fit_rl": _fit(rl_m, "rl", gold0),
            "peak_bon": _peak(bon_m),
            "peak_rl": _peak(rl_m),
            "peak_kl_seeds": per_seed_peaks,
            "fall_bon": _fall(bon_m),
            "fall_rl": _fall(rl_m),
        }
        print(
            f"[overoptimisation] {m} comparisons: best-of-n peak KL "
            f"{by_size[m]['peak_bon']['kl']:.2f} (seeds {[round(k, 2) for k in per_seed_peaks]})"
            f", gold {bon_m['gold'][0]:.3f} -> peak {by_size[m]['peak_bon']['gold']:.3f} -> "
            f"{bon_m['gold'][-1]:.3f}",
            flush=True,
        )

    # the ensemble at the headline size: same comparisons, bootstrap resamples per member
    ens: dict = {"members": s["members"], "comparisons": headline}
    for kind in ("single", "mean", "min"):
        bon_k = _mean_curves([c[0] for c in ensemble_curves[kind]])
        rl_k = _mean_curves([c[1] for c in ensemble_curves[kind]])
        ens[kind] = {
            "best_of_n": bon_k,
            "ppo": rl_k,
            "fall_bon": _fall(bon_k),
            "fall_rl": _fall(rl_k),
        }
    for kind in ("mean", "min"):
        for curve in ("best_of_n", "ppo"):
            a = ens[kind][curve]["per_prompt_gold"][-1]
            b = ens["single"][curve]["per_prompt_gold"][-1]
            d, lo, hi = paired_bootstrap(a, b)
            ens[kind][f"{curve}_last_minus_single"] = {"diff": d, "ci95": [lo, hi]}
    # the reference: best-of-n picked by the gold reward itself
    oracle = pool_curve(
        gold + 1e-9 * torch.rand(gold.shape, generator=gen, dtype=torch.float64),
        gold,
        ns=s["ns"],
        groups=groups,
    )
    head = by_size[headline]
    for kind in ens:
        if isinstance(ens[kind], dict):
            for curve in ("best_of_n", "ppo"):
                ens[kind][curve] = _strip(ens[kind][curve])
    metrics = {
        "best_of_n": _strip(head["best_of_n"]),
        "ppo": dict(
            _strip(head["ppo"]),
            kind="exact KL-regularised optimum over the pool "
            "(what PPO with KL coefficient beta converges to)",
        ),
        "fits": {"best_of_n": head["fit_bon"], "ppo": head["fit_rl"]},
        "fall": {"best_of_n": head["fall_bon"], "ppo": head["fall_rl"]},
        "sizes": {
            str(m): {
                "best_of_n": _strip(v["best_of_n"]),
                "ppo": _strip(v["ppo"]),
                "fit_bon": v["fit_bon"],
                "fit_rl": v["fit_rl"],
                "peak_bon": v["peak_bon"],
                "peak_rl": v["peak_rl"],
                "peak_kl_seeds": v["peak_kl_seeds"],
                "fall_bon": v["fall_bon"],
                "fall_rl": v["fall_rl"],
            }
            for m, v in by_size.items()
        },
        "ensemble": ens,
        "gold_oracle": {"n": oracle["n"], "kl": oracle["kl"], "gold": oracle["gold"]},
        "headline": headline,
        "comparisons_available": len(all_pairs),
        "pool": {
            "prompts": len(test),
            "samples": N,
            "distinct_per_prompt": float((groups == torch.arange(N)).sum(1).double().mean()),
            "gold_mean": float(gold.mean()),
        },
        "seeds": list(s["seeds"]),
        "examples": examples,
        "sampling_s": t_sampling,
    }
    metrics["ppo_trained"] = _ppo_trained(s, source, ctx.command)
    ctx.save("rlhf/overoptimisation", metrics=metrics)
