"""Markovian Recursive Self-Aggregation (RSA) datasets.

Problems with a population of rollouts -> per-rollout tails (last tau tokens) ->
K-candidate subsets -> versioned aggregation prompts -> a teacher's aggregated
solution -> SFT examples and RL prompt sets, for R Markovian rounds, resumably.
`zaya-data rsa pipelines/rsa_math.yaml` runs it; `run_rsa` is the library entry point.
"""

from zaya_data.rsa.config import RSAConfig, load_rsa_config, parse_rsa_config
from zaya_data.rsa.run import EXAMPLE, RL_PROMPTS, RunResult, run_rsa

__all__ = ["RSAConfig", "load_rsa_config", "parse_rsa_config", "run_rsa", "RunResult", "EXAMPLE", "RL_PROMPTS"]
