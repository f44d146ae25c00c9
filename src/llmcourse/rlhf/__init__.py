"""Reinforcement learning from human feedback: preferences, reward models, PPO, DPO and GRPO."""
