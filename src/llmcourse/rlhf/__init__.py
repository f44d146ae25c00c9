"""Learning from preferences: reward models, PPO, DPO and GRPO on top of a fine-tuned model.

* ``logprobs``: log-probabilities of response tokens (``token_logprobs``,
  ``sequence_logprobs``) and the final hidden states a scalar head reads;
* ``kl``: Schulman's k1, k2, k3 estimators of ``KL(pi || ref)`` from samples of ``pi``;
* ``rollout``: groups of responses sampled from a chat model (``sample_rollouts``), and the RL
  prompts (``rl_prompts``), never among chapter 9's training or held-out prompts;
* ``preferences``: pairs ranked by a checkable criterion, ``ranking_to_pairs`` (InstructGPT's
  K(K-1)/2 pairs per ranking) and JSON Lines for human labels;
* ``reward``: ``RewardModel`` (the LM with a scalar head at the last response token) trained
  with the Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected)``;
* ``ppo``: GAE, the clipped objective, the value head and the per-token KL penalty;
* ``dpo``: ``dpo_loss``, the DPO paper's loss on sequence log-probabilities;
* ``grpo``: group-normalised advantages with a verifiable reward, no value model;
* ``course``: the course's cached runs (``load_rlhf``, ``history``, ``info``).

``python -m llmcourse.rlhf --help`` lists the command lines.
"""

from .course import RECIPES, history, info, load_rlhf
from .dpo import DPOConfig, dpo_loss, train_dpo
from .grpo import GRPOConfig, exact_reward, group_advantages, grpo_loss, train_grpo
from .kl import kl_estimate
from .logprobs import logits_and_hidden, sequence_logprobs, token_logprobs
from .ppo import PolicyWithValue, PPOConfig, gae, ppo_clip_loss, train_ppo, whiten
from .preferences import PreferencePair, build_preferences, load_jsonl, ranking_to_pairs, save_jsonl
from .reward import RewardModel, RMConfig, bradley_terry_loss, reward_fn, train_reward_model
from .rollout import Rollout, rl_prompts, sample_rollouts

__all__ = [
    "RECIPES",
    "DPOConfig",
    "GRPOConfig",
    "PPOConfig",
    "PolicyWithValue",
    "PreferencePair",
    "RMConfig",
    "RewardModel",
    "Rollout",
    "bradley_terry_loss",
    "build_preferences",
    "dpo_loss",
    "exact_reward",
    "gae",
    "group_advantages",
    "grpo_loss",
    "history",
    "info",
    "kl_estimate",
    "load_jsonl",
    "load_rlhf",
    "logits_and_hidden",
    "ppo_clip_loss",
    "ranking_to_pairs",
    "reward_fn",
    "rl_prompts",
    "sample_rollouts",
    "save_jsonl",
    "sequence_logprobs",
    "token_logprobs",
    "train_dpo",
    "train_grpo",
    "train_ppo",
    "train_reward_model",
    "whiten",
]
