"""TAMER on a gridworld: a trainer's +1/-1 teaches the way far sooner than the -1 step reward."""
import random

from gptlib.rlhf.tamer import (
    GridWorld,
    greedy_steps,
    simulated_trainer,
    train_q_learning,
    train_tamer,
)


def test_gridworld_and_trainer():
    env = GridWorld(4)
    assert env.step((0, 0), 0) == ((0, 1), -1.0, False)
    assert env.step((0, 0), 2)[0] == (0, 0)  # a wall
    assert env.step((3, 2), 0) == ((3, 3), -1.0, True)
    rng = random.Random(0)
    assert simulated_trainer(env, (0, 0), 0, rng, noise=0.0) == 1.0  # towards the goal
    assert simulated_trainer(env, (0, 0), 3, rng, noise=0.0) == -1.0  # into the wall
    flips = sum(simulated_trainer(env, (0, 0), 0, rng, noise=0.2) < 0 for _ in range(2000))
    assert 300 < flips < 500  # about 20% of the answers flipped


def test_tamer_learns_in_a_few_episodes_where_q_learning_needs_many():
    env = GridWorld(6)
    for seed in range(5):
        _, tamer = train_tamer(env, 5, seed=seed, noise=0.0)
        _, q = train_q_learning(env, 20, seed=seed)
        assert tamer[2] == env.optimal_steps  # optimal after three episodes of feedback
        assert min(q) > env.optimal_steps  # 20 episodes of -1 per step are not enough
    _, q = train_q_learning(env, 400, seed=0)
    assert q[-1] == env.optimal_steps  # it gets there eventually


def test_noisy_feedback_runs_are_seeded():
    env = GridWorld(5)
    a = train_tamer(env, 8, seed=1, noise=0.2)[1]
    assert a == train_tamer(env, 8, seed=1, noise=0.2)[1]
    runs = {tuple(train_tamer(env, 8, seed=s, noise=0.2)[1]) for s in range(6)}
    assert len(runs) > 1
    assert greedy_steps({}, env, max_steps=7) == 7  # an untrained table may never arrive
