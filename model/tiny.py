"""The tiny packaged ZAYA1: random weights from a fixed seed, the project's embedded tokenizer.

Nothing is downloaded: `load_tiny()` builds the checkpoint folder from the seed on first
use (in a cache folder, atomically), then loads it through the ordinary checkpoint path,
so the demo exercises the same loader as a real model. The weights depend only on the
seed and `configs/tiny.json`, so every machine builds the same bytes.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .config import Zaya1Config
from .loading import load_model, load_tokenizer, save_checkpoint
from .zaya1 import Zaya1ForCausalLM

TINY_SEED = 1234
# The tiny model's skip-class bias: large enough that mixture-of-depths fires on some tokens.
TINY_SKIP_BIAS = 0.0
TOKENIZER_FILE = Path(__file__).resolve().parents[1] / "zaya_data" / "assets" / "tokenizer" / "tokenizer.json"


def randomize_(
    model: Zaya1ForCausalLM,
    seed: int,
    *,
    skip_bias: float = -1.0,
    embed_std: float = 0.5,
    block_gain: float = 4.0,
) -> Zaya1ForCausalLM:
    """Fill every parameter and the balancing biases deterministically from `seed`.

    Unlike a training init, every feature is made to matter: `temp` is non-zero (with zero
    keys attention would be uniform), residual scales and biases are off their identity,
    balancing biases are non-zero and the skip class gets `skip_bias`. Matrices are scaled
    by 1/sqrt(fan_in) so activations keep a sensible size through the layers.
    """
    device = model.device
    gen = torch.Generator(device=device).manual_seed(seed)  # on CPU: the same values on every machine

    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32, device=device)

    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            leaf = name.rsplit(".", 1)[-1]
            if name == "model.embed_tokens.weight":
                value = randn(p.shape) * embed_std
            elif leaf == "temp":
                value = 0.5 + torch.rand(p.shape, generator=gen, device=device)
            elif leaf == "hidden_states_scale":
                # Blocks' outputs amplified: with tied embeddings a random model otherwise
                # mostly echoes its current token; this way the context decides the next one.
                value = block_gain * (1.0 + 0.1 * randn(p.shape))
            elif leaf in ("residual_scale", "input_hidden_states_scale", "router_states_scale"):
                value = 1.0 + 0.1 * randn(p.shape)
            elif leaf in ("hidden_states_bias", "residual_bias", "input_hidden_states_bias", "bias"):
                value = 0.1 * randn(p.shape)
            elif p.ndim == 1:  # norm weights
                value = 1.0 + 0.1 * randn(p.shape)
            else:
                fan_in = math.prod(p.shape[1:]) if p.ndim != 3 or "experts" not in name else p.shape[-1]
                value = randn(p.shape) / math.sqrt(fan_in)
            p.copy_(value.to(p.dtype))
        for layer in model.model.layers:
            biases = layer.mlp.gate.balancing_biases
            biases.copy_(0.05 * randn(biases.shape))
            biases[-1] = skip_bias
    return model


def build_tiny(seed: int = TINY_SEED, config: Zaya1Config | None = None) -> Zaya1ForCausalLM:
    config = config or Zaya1Config.named("tiny")
    return randomize_(Zaya1ForCausalLM(config), seed, skip_bias=TINY_SKIP_BIAS).eval()


def default_cache_dir() -> Path:
    root = os.environ.get("ZAYA_MODEL_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zaya-data" / "models"


def tiny_folder(seed: int = TINY_SEED, cache_dir: str | Path | None = None) -> Path:
    """The checkpoint folder of the tiny model, built on first use.

    Its name carries a digest of the config, the seed and the tokenizer, so a change to
    any of them builds a fresh folder instead of reusing stale weights.
    """
    config = Zaya1Config.named("tiny")
    digest = hashlib.sha256(f"{config.to_json()}|{seed}|{TINY_SKIP_BIAS}|randomize-v2".encode())
    if TOKENIZER_FILE.is_file():
        digest.update(TOKENIZER_FILE.read_bytes())
    folder = Path(cache_dir or default_cache_dir()) / f"zaya1-tiny-s{seed}-{digest.hexdigest()[:12]}"
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        save_checkpoint(
            build_tiny(seed, config), staging, tokenizer_file=TOKENIZER_FILE if TOKENIZER_FILE.is_file() else None
        )
        try:
            staging.rename(folder)  # atomic: readers see a whole folder or none
        except OSError:
            if not (folder / "config.json").is_file():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_tiny(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    seed: int = TINY_SEED,
    cache_dir: str | Path | None = None,
):  # -> tuple[Zaya1ForCausalLM, tokenizers.Tokenizer | None]
    """(model, tokenizer-or-None): the tiny ZAYA1 and the embedded tokenizer when it is shipped."""
    folder = tiny_folder(seed, cache_dir)
    return load_model(folder, device=device, dtype=dtype), load_tokenizer(folder)
