"""Aligning a language model with what people want: the three steps of InstructGPT, in miniature.

- :mod:`gptlib.rlhf.world`: the toy world and its programmatic "human" labeller (demonstrations,
  rankings, and the gold reward that lets the book measure over-optimisation);
- :mod:`gptlib.rlhf.sft`: supervised fine-tuning with the loss on response tokens only;
- :mod:`gptlib.rlhf.reward`: a reward model trained on all C(K, 2) pairs of each K-wise ranking;
- :mod:`gptlib.rlhf.ppo`: PPO with a per-token KL penalty to the frozen SFT model, GAE, a value
  head, an adaptive KL controller and PPO-ptx;
- :mod:`gptlib.rlhf.dpo`: direct preference optimisation on the same preference data.
"""
from gptlib.rlhf.world import *  # noqa: F401,F403
from gptlib.rlhf.sft import *  # noqa: F401,F403
from gptlib.rlhf.reward import *  # noqa: F401,F403
from gptlib.rlhf.ppo import *  # noqa: F401,F403
from gptlib.rlhf.dpo import *  # noqa: F401,F403
