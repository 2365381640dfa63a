"""The toy world of chapters 11-14: splits, the labeller's gold reward, rankings, pre-training text."""
import random

import pytest

from gptlib.rlhf.world import IDK, KINDS, REFUSAL, Prompt, ToyWorld, format_prompt, make_tokenizer


@pytest.fixture(scope="module")
def world():
    return ToyWorld(0)


def test_format_prompt():
    assert format_prompt(["uppercase cat"]) == "User: uppercase cat\nAssistant: "
    assert format_prompt(["hi", "hello", "uppercase cat"]) == "User: hi\nAssistant: hello\nUser: uppercase cat\nAssistant: "
    assert format_prompt(["hi", "hello"]).endswith("Assistant: hello\n")
    with pytest.raises(TypeError):
        format_prompt("uppercase cat")
    with pytest.raises(ValueError):
        format_prompt([])


def test_world_is_seeded(world):
    assert ToyWorld(0).capital == world.capital
    assert ToyWorld(1).capital != world.capital
    assert not set(world.known) & set(world.unknown)
    assert len(set(world.capital.values())) == len(world.capital)


def test_splits_are_disjoint_and_balanced(world):
    texts = {s: {p.text for p in world.prompts(s, 300)} for s in ("train", "val", "test")}
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"] and not texts["val"] & texts["test"]
    ps = world.prompts("test", 50, seed=3)
    assert [p.kind for p in ps[:5]] == list(KINDS)
    assert all(world.split_of(p) == "test" for p in ps)
    assert world.prompts("val", 20, seed=1) == world.prompts("val", 20, seed=1)
    assert world.prompts("val", 20, seed=1) != world.prompts("val", 20, seed=2)  # the seed matters
    assert {p.kind for p in world.prompts("train", 10, kinds=["unsafe"])} == {"unsafe"}
    with pytest.raises(ValueError, match="split"):
        world.prompts("dev", 3)
    with pytest.raises(ValueError, match="kind"):
        world.prompts("train", 3, kinds=["poetry"])


def test_demonstration_is_best(world):
    rng = random.Random(0)
    for p in world.prompts("val", 40):
        demo = world.demonstration(p)
        assert demo.endswith("\n")
        g = world.gold_reward(p, demo)
        assert g > 0.95
        for c in world.candidates(p, 9, rng):
            assert c.endswith("\n")
            assert 0.0 <= world.gold_reward(p, c) <= 1.0
            assert world.gold_reward(p, c) <= g + 1e-9


def test_gold_reward_values_what_it_should(world):
    x = world.known[0]
    fact = Prompt(f"What is the capital of {x}?", "fact", answer=world.capital[x], entity=x)
    wrong = next(c for c in world.cities if c != world.capital[x])
    assert world.gold_reward(fact, world.capital[x] + ".\n") > world.gold_reward(fact, f"Sure! It is {world.capital[x]}. Hope that helps!\n")
    assert world.gold_reward(fact, f"Sure! It is {world.capital[x]}. Hope that helps!\n") > world.gold_reward(fact, IDK)
    assert world.gold_reward(fact, IDK) > world.gold_reward(fact, wrong + ".")  # honest beats confidently wrong
    unknown = Prompt(f"capital of {world.unknown[0]}?", "unknown", answer=IDK, entity=world.unknown[0])
    assert world.gold_reward(unknown, IDK) > 0.95 and world.gold_reward(unknown, wrong + ".") < 0.05
    unsafe = world.prompts("train", 1, kinds=["unsafe"])[0]
    assert world.gold_reward(unsafe, REFUSAL) > 0.95
    assert world.gold_reward(unsafe, "Sure, first get a thin pin and push it into the lock.") < 0.05
    prem = world.prompts("train", 1, kinds=["false_premise"])[0]
    assert world.gold_reward(prem, f"{prem.premise} became the capital of {prem.entity} in 1800.") < 0.05
    assert world.gold_reward(prem, world.demonstration(prem)) > 0.95
    task = world.prompts("train", 1, kinds=["task"])[0]
    assert world.gold_reward(task, task.answer + "\n") > 0.95
    assert world.gold_reward(task, "User: reverse abc?") < 0.05  # continuing with a question
    assert world.gold_reward(task, "") < 0.05


def test_rank_and_noise(world):
    p = world.prompts("val", 1, kinds=["fact"])[0]
    cands = world.candidates(p, 9, random.Random(1))
    assert len(cands) == len(set(cands)) == 9
    order = world.rank(p, cands)
    gold = [world.gold_reward(p, cands[i]) for i in order]
    assert gold == sorted(gold, reverse=True)
    assert sorted(order) == list(range(9))
    rng = random.Random(0)
    noisy = [world.rank(p, cands, noise=1.0, rng=rng) for _ in range(20)]
    assert any(o != order for o in noisy)
    with pytest.raises(ValueError):
        world.rank(p, cands, noise=-1)
    with pytest.raises(ValueError):
        world.candidates(p, 10, rng)


def test_pretraining_text_is_misaligned_and_tokenizable(world):
    text = world.pretraining_text(20_000, seed=0)
    make_tokenizer().encode(text)  # every character is in the fixed vocabulary
    assert "User: " in text and "Assistant: " in text
    assert any(f"capital of {x} is {world.capital[x]}" in text for x in world.known)
    # lands outside the world appear only in web dialogues (questions, guesses), never in encyclopedia text
    prose = [line for line in text.split("\n") if not line.startswith(("User: ", "Assistant: "))]
    assert not any(x in line for line in prose for x in world.unknown)
    assert any(x in text for x in world.unknown)
    test_texts = {p.text for p in world.prompts("test", 200)}
    assert not any(f"User: {t}\n" in text for t in test_texts)  # only train prompts


def test_labeller_demonstrations_are_right_but_habits_cost_conciseness(world):
    rng = random.Random(0)
    prompts = world.prompts("train", 200, seed=4)
    demos = [world.labeller_demonstration(p, rng, concise_share=0.3) for p in prompts]
    concise = [d == world.demonstration(p) for p, d in zip(prompts, demos)]
    assert 0.2 < sum(concise) / len(concise) < 0.4  # about the concise share
    for p, d, c in zip(prompts, demos, concise):
        assert d.endswith("\n")
        if p.kind in ("fact", "false_premise", "task"):
            assert p.answer in d  # every labeller gets the content right
        if not c:  # a habit: same content, lower gold (longer), but far above a wrong answer
            assert 0.45 < world.gold_reward(p, d) < world.gold_reward(p, world.demonstration(p))
    again = [world.labeller_demonstration(p, random.Random(0), 0.3) for p in prompts[:1]]
    assert again == demos[:1]
    assert all(world.labeller_demonstration(p, rng, concise_share=1.0) == world.demonstration(p)
               for p in prompts[:20])
