"""Aligning a language model with what people want: the three steps of InstructGPT, in miniature.

- :mod:`gptlib.rlhf.world`: the toy world and its programmatic "human" labeller (demonstrations,
  rankings, and the gold reward that lets the book measure over-optimisation);
- :mod:`gptlib.rlhf.sft`: supervised fine-tuning with the loss on response tokens only;
- :mod:`gptlib.rlhf.reward`: a reward model trained on all C(K, 2) pairs of each K-wise ranking;
- :mod:`gptlib.rlhf.ppo_math`: GAE, the clipped PPO losses, KL-shaped rewards, KL controllers;
- :mod:`gptlib.rlhf.rollout`: sampling responses, scoring their tokens, KL to the reference;
- :mod:`gptlib.rlhf.ppo`: the policy with its critic and the PPO trainer (per-token KL penalty
  to the frozen SFT model, adaptive KL controller, PPO-ptx);
- :mod:`gptlib.rlhf.dpo`: direct preference optimisation on the same preference data;
- :mod:`gptlib.rlhf.evaluation`: policies compared on held-out prompts (bootstrap, win rates);
- :mod:`gptlib.rlhf.overoptimisation`: reward over-optimisation over a sample pool (best-of-n,
  the KL-regularised optimum, exact KL, Gao et al.'s functional forms, proxy ensembles);
- :mod:`gptlib.rlhf.dialogue`: two-turn dialogues where the user says the answer was wrong;
- :mod:`gptlib.rlhf.tools`: arithmetic demonstrations with and without calculator calls;
- :mod:`gptlib.rlhf.tamer`: TAMER, learning from a trainer's +1/-1 on a gridworld.

The trained models are assets (``gptlib.assets.load("rlhf/sft")``, ``rlhf/base``,
``rlhf/reward``, ``rlhf/ppo``, ``rlhf/dpo``), made by the recipes ``gptlib.recipes.rlhf``
and ``gptlib.recipes.ppo``; the over-optimisation measurement is ``rlhf/overoptimisation``
(recipe ``gptlib.recipes.overoptimisation``).
"""

from gptlib.rlhf.dpo import *  # noqa: F401,F403
from gptlib.rlhf.ppo import *  # noqa: F401,F403
from gptlib.rlhf.ppo_math import *  # noqa: F401,F403
from gptlib.rlhf.reward import *  # noqa: F401,F403
from gptlib.rlhf.rollout import *  # noqa: F401,F403
from gptlib.rlhf.sft import *  # noqa: F401,F403
from gptlib.rlhf.world import *  # noqa: F401,F403
