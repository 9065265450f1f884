"""The packaged ZAYA1 model: configuration, readable PyTorch model, checkpoint I/O, decoding.

    from model import load_model, generate, SamplingParams
    model = load_model("path/to/ZAYA1-8B", device="cuda", dtype=torch.bfloat16)

`model.kernels` (fused Triton kernels) is a separate subpackage and is not imported here.
"""

from .cache import LayerCache, ModelCache
from .config import RopeParameters, Zaya1Config
from .generate import Completion, SamplingParams, generate, sample_next
from .loading import CheckpointError, load_config, load_model, load_pretrained, load_tokenizer, load_weights, save_checkpoint
from .routing import balance_routing_, load_stats, routing_loads
from .tiny import build_tiny, load_tiny, randomize_
from .zaya1 import Zaya1ForCausalLM, parameter_counts

__all__ = [
    "CheckpointError",
    "Completion",
    "LayerCache",
    "ModelCache",
    "RopeParameters",
    "SamplingParams",
    "Zaya1Config",
    "Zaya1ForCausalLM",
    "balance_routing_",
    "build_tiny",
    "generate",
    "load_config",
    "load_model",
    "load_pretrained",
    "load_stats",
    "load_tokenizer",
    "load_tiny",
    "load_weights",
    "parameter_counts",
    "randomize_",
    "routing_loads",
    "sample_next",
    "save_checkpoint",
]
