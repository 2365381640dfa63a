"""TAMER (Knox and Stone, 2009): learning from a trainer's +1/-1, before reward models.

A person watches an agent act and presses "good" or "bad" after each action. TAMER does not
treat that signal as an environment reward to be summed over the future: it learns a model
``H(s, a)`` of the *trainer's* immediate judgement and acts greedily on it, because a trainer
already judges an action by its consequences. On a gridworld this learns the way to the goal
in an episode or two, where Q-learning on the environment's reward (-1 per step) needs many
episodes of exploration. The line from here to chapters 12-13 runs through Christiano et al.
(2017, comparisons of trajectory clips, a learned reward, RL), Stiennon et al. (2020,
summaries) and InstructGPT.

- :class:`GridWorld`: a ``size x size`` grid, start in one corner, goal in the other;
- :func:`simulated_trainer`: +1 when an action brings the agent closer to the goal, -1
  otherwise, each answer flipped with probability ``noise``;
- :func:`train_tamer` and :func:`train_q_learning`: tabular learners; both return the greedy
  policy's steps to the goal after every training episode (the learning curve).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["GridWorld", "simulated_trainer", "greedy_steps", "train_tamer", "train_q_learning"]

ACTIONS = ((0, 1), (1, 0), (0, -1), (-1, 0))  # right, down, left, up


@dataclass(frozen=True)
class GridWorld:
    """A ``size x size`` grid: start at (0, 0), goal at (size-1, size-1); walls stop moves."""

    size: int = 6

    @property
    def start(self) -> tuple[int, int]:
        return (0, 0)

    @property
    def goal(self) -> tuple[int, int]:
        return (self.size - 1, self.size - 1)

    @property
    def optimal_steps(self) -> int:
        return 2 * (self.size - 1)

    def step(self, s: tuple[int, int], a: int) -> tuple[tuple[int, int], float, bool]:
        """``(next state, reward, done)``: reward -1 per step, the episode ends at the goal."""
        dr, dc = ACTIONS[a]
        r = min(max(s[0] + dr, 0), self.size - 1)
        c = min(max(s[1] + dc, 0), self.size - 1)
        nxt = (r, c)
        return nxt, -1.0, nxt == self.goal

    def distance(self, s: tuple[int, int]) -> int:
        return abs(self.goal[0] - s[0]) + abs(self.goal[1] - s[1])


def simulated_trainer(env: GridWorld, s: tuple[int, int], a: int, rng: random.Random,
                      noise: float = 0.1) -> float:
    """+1 if action ``a`` in ``s`` gets closer to the goal, else -1; flipped with ``noise``."""
    nxt, _, _ = env.step(s, a)
    good = env.distance(nxt) < env.distance(s)
    if rng.random() < noise:
        good = not good
    return 1.0 if good else -1.0


def _greedy(table: dict, s: tuple[int, int], rng: random.Random) -> int:
    values = [table.get((s, a), 0.0) for a in range(len(ACTIONS))]
    best = max(values)
    return rng.choice([a for a, v in enumerate(values) if v == best])


def greedy_steps(table: dict, env: GridWorld, max_steps: int = 50, seed: int = 0) -> int:
    """Steps the greedy policy of ``table`` takes to the goal (``max_steps`` if it never does)."""
    rng = random.Random(seed)
    s = env.start
    for t in range(1, max_steps + 1):
        s, _, done = env.step(s, _greedy(table, s, rng))
        if done:
            return t
    return max_steps


def train_tamer(env: GridWorld, episodes: int, seed: int = 0, noise: float = 0.1,
                max_steps: int = 50) -> tuple[dict, list[int]]:
    """TAMER: ``H(s, a)`` = mean trainer feedback for ``a`` in ``s``; act greedily on ``H``.

    Returns ``(H, curve)`` with ``curve[i]`` the greedy policy's steps to the goal after
    episode ``i``.
    """
    rng = random.Random(seed)
    h: dict = {}
    counts: dict = {}
    curve = []
    for _ in range(episodes):
        s = env.start
        for _ in range(max_steps):
            a = _greedy(h, s, rng)
            f = simulated_trainer(env, s, a, rng, noise)
            counts[(s, a)] = counts.get((s, a), 0) + 1
            h[(s, a)] = h.get((s, a), 0.0) + (f - h.get((s, a), 0.0)) / counts[(s, a)]
            s, _, done = env.step(s, a)
            if done:
                break
        curve.append(greedy_steps(h, env, max_steps, seed))
    return h, curve


def train_q_learning(env: GridWorld, episodes: int, seed: int = 0, epsilon: float = 0.1,
                     alpha: float = 0.5, gamma: float = 0.95,
                     max_steps: int = 50) -> tuple[dict, list[int]]:
    """Tabular Q-learning on the environment's reward (-1 per step), epsilon-greedy."""
    rng = random.Random(seed)
    q: dict = {}
    curve = []
    for _ in range(episodes):
        s = env.start
        for _ in range(max_steps):
            a = rng.randrange(len(ACTIONS)) if rng.random() < epsilon else _greedy(q, s, rng)
            nxt, r, done = env.step(s, a)
            target = r if done else r + gamma * max(q.get((nxt, b), 0.0)
                                                   for b in range(len(ACTIONS)))
            q[(s, a)] = q.get((s, a), 0.0) + alpha * (target - q.get((s, a), 0.0))
            s = nxt
            if done:
                break
        curve.append(greedy_steps(q, env, max_steps, seed))
    return q, curve
