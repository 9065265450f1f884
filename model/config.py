"""ZAYA1 hyper-parameters: a frozen dataclass that reads and writes the Hugging Face `config.json`.

Field names are those of upstream `transformers.ZayaConfig` (and so of the published
checkpoint's config.json), so a checkpoint folder's config loads without translation.
Two named configurations ship as JSON next to this file: `zaya1-8b` (the published model)
and `tiny` (every architectural feature on, vocabulary of the project's embedded tokenizer).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

LAYER_TYPES = ("hybrid", "hybrid_sliding")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Keys every Hugging Face config.json may carry that say nothing about the architecture.
_GENERIC_KEYS = frozenset(
    {
        "transformers_version", "architectures", "dtype", "torch_dtype", "model_type", "_name_or_path",
        "output_hidden_states", "output_attentions", "return_dict", "chunk_size_feed_forward",
        "is_encoder_decoder", "id2label", "label2id", "problem_type", "use_cache", "initializer_range",
        "attention_dropout", "output_router_logits", "auto_map", "tokenizer_class",
    }
)


@dataclass(frozen=True)
class RopeParameters:
    """RoPE of one layer type: base, and the fraction of each head's dimensions rotated."""

    rope_theta: float
    partial_rotary_factor: float = 1.0
    rope_type: str = "default"


def _default_rope() -> dict[str, RopeParameters]:
    return {
        "hybrid": RopeParameters(rope_theta=5_000_000.0, partial_rotary_factor=0.5),
        "hybrid_sliding": RopeParameters(rope_theta=10_000.0, partial_rotary_factor=0.5),
    }


@dataclass(frozen=True)
class Zaya1Config:
    vocab_size: int = 262_272
    hidden_size: int = 2048
    num_hidden_layers: int = 40
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 131_072
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    rope_parameters: dict[str, RopeParameters] = field(default_factory=_default_rope)
    sliding_window: int | None = None
    moe_intermediate_size: int = 2048
    num_experts: int = 16
    num_experts_per_tok: int = 1
    router_hidden_size: int = 256
    layer_types: tuple[str, ...] = ()
    pad_token_id: int | None = 0
    bos_token_id: int | None = 2
    eos_token_id: int | tuple[int, ...] | None = 106
    attention_bias: bool = False
    lm_head_bias: bool = False
    cca_time0: int = 2
    cca_time1: int = 2

    def __post_init__(self) -> None:
        # Like the reference: no `layer_types` means every layer is a full-attention `hybrid` layer.
        if not self.layer_types:
            object.__setattr__(self, "layer_types", ("hybrid",) * self.num_hidden_layers)
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if isinstance(self.eos_token_id, list):
            object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
        self.validate()

    def validate(self) -> None:
        if self.num_experts_per_tok != 1:
            raise ValueError(f"num_experts_per_tok={self.num_experts_per_tok}: ZAYA1 routes each token to one expert")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if (self.num_key_value_heads * self.head_dim) % 2:
            raise ValueError("num_key_value_heads * head_dim must be even (values are half current, half delayed)")
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        for i, kind in enumerate(self.layer_types):
            if kind not in LAYER_TYPES:
                raise ValueError(f"layer_types[{i}]={kind!r}: expected one of {LAYER_TYPES}")
            if kind not in self.rope_parameters:
                raise ValueError(f"rope_parameters has no entry for layer type {kind!r}")
        for kind, rope in self.rope_parameters.items():
            if rope.rope_type != "default":
                raise ValueError(f"rope_parameters[{kind!r}].rope_type={rope.rope_type!r}: only 'default' is supported")
            if int(self.head_dim * rope.partial_rotary_factor) % 2:
                raise ValueError(f"rope_parameters[{kind!r}]: the rotated dimension count must be even")
        if "hybrid_sliding" in self.layer_types and not self.sliding_window:
            raise ValueError("sliding_window must be set when layer_types contains 'hybrid_sliding'")
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act={self.hidden_act!r}: ZAYA1 experts are SwiGLU ('silu')")
        if self.cca_time0 < 1 or self.cca_time1 < 1:
            raise ValueError("cca_time0 and cca_time1 are convolution kernel sizes and must be >= 1")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def kv_groups(self) -> int:
        """Query heads served by each key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    @property
    def conv_channels(self) -> int:
        """Channels of the packed [q0, k0] the CCA convolutions run over."""
        return (self.num_attention_heads + self.num_key_value_heads) * self.head_dim

    @property
    def conv_state_len(self) -> int:
        """Past positions the two stacked causal convolutions need: (k0 - 1) + (k1 - 1)."""
        return (self.cca_time0 - 1) + (self.cca_time1 - 1)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    # ---- JSON ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "<dict>") -> Zaya1Config:
        """Build from a config.json mapping. Unknown architecture keys are an error naming `source`."""
        model_type = raw.get("model_type", "zaya")
        if model_type != "zaya":
            raise ValueError(f"{source}: model_type={model_type!r}, expected 'zaya'")
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in raw if k not in known and k not in _GENERIC_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown config fields {unknown}")
        kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        rope_raw = kwargs.pop("rope_parameters", None)
        if rope_raw is not None:
            rope: dict[str, RopeParameters] = {}
            for kind, params in rope_raw.items():
                # The hub's config carries a stray top-level "rope_type" beside the per-type dicts.
                if not isinstance(params, dict):
                    continue
                unknown_rope = sorted(set(params) - {"rope_theta", "partial_rotary_factor", "rope_type"})
                if unknown_rope:
                    raise ValueError(f"{source}: rope_parameters[{kind!r}] has unknown fields {unknown_rope}")
                rope[kind] = RopeParameters(
                    rope_theta=float(params["rope_theta"]),
                    partial_rotary_factor=float(params.get("partial_rotary_factor", 1.0)),
                    rope_type=str(params.get("rope_type", "default")),
                )
            kwargs["rope_parameters"] = rope
        if "layer_types" in kwargs and kwargs["layer_types"] is not None:
            kwargs["layer_types"] = tuple(kwargs["layer_types"])
        elif "layer_types" in kwargs:
            del kwargs["layer_types"]
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    @classmethod
    def from_json_file(cls, path: str | Path) -> Zaya1Config:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def named(cls, name: str) -> Zaya1Config:
        """A shipped configuration: 'zaya1-8b' or 'tiny'."""
        path = CONFIG_DIR / f"{name}.json"
        if not path.is_file():
            available = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise KeyError(f"no configuration named {name!r}; available: {available}")
        return cls.from_json_file(path)

    def to_dict(self) -> dict[str, Any]:
        """The config.json mapping, readable by `transformers.ZayaConfig` too."""
        out = asdict(self)
        out["rope_parameters"] = {k: asdict(v) for k, v in self.rope_parameters.items()}
        out["layer_types"] = list(self.layer_types)
        if isinstance(self.eos_token_id, tuple):
            out["eos_token_id"] = list(self.eos_token_id)
        out["model_type"] = "zaya"
        out["architectures"] = ["ZayaForCausalLM"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
