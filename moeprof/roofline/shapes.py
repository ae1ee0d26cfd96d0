"""MoE model shapes: presets and loading from a local Hugging Face config.json (no network).

Every preset is built from the fields of the model's published Hugging Face config.json (copied
below, MoE- and size-relevant fields only) through the same parser that reads user configs, so a
preset and its config.json cannot disagree. Non-expert parameters (embeddings, attention, dense
MLP layers, routers, norms) are estimated from the same fields; they are stored in BF16 by every
format (see cost.memory_plan). The estimates match the model cards' totals within ~1%
(tests/test_models_presets.py checks this).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from moeprof.errors import MoeprofError


@dataclass(frozen=True)
class MoeModel:
    name: str
    hidden_size: int                 # H
    expert_intermediate_size: int    # I, per routed expert
    num_experts: int                 # E, routed experts per MoE layer
    top_k: int                       # k, routed experts per token
    num_moe_layers: int
    num_layers: int                  # all decoder layers (dense + MoE)
    num_shared_experts: int = 0      # always-on experts per MoE layer
    shared_intermediate_size: int = 0  # I of one shared expert
    gated: bool = True               # gate_up is [2I, H] (SwiGLU) instead of [I, H]
    expert_bias: bool = False        # gate_up and down carry biases (GPT-OSS)
    non_expert_params: int = 0       # embeddings, attention, dense MLPs, routers, norms
    source: str = ""                 # where the shape came from

    @property
    def intermediate_size(self) -> int:
        """Alias of expert_intermediate_size (the profiler's name for it)."""
        return self.expert_intermediate_size

    # Shapes as [N, K]: N output channels, K reduction dim.
    def gate_up_shape(self, intermediate: int | None = None) -> tuple[int, int]:
        i = self.expert_intermediate_size if intermediate is None else intermediate
        return (2 * i if self.gated else i, self.hidden_size)

    def down_shape(self, intermediate: int | None = None) -> tuple[int, int]:
        i = self.expert_intermediate_size if intermediate is None else intermediate
        return (self.hidden_size, i)

    def _mlp_params(self, intermediate: int) -> int:
        n1, k1 = self.gate_up_shape(intermediate)
        n2, k2 = self.down_shape(intermediate)
        bias = (n1 + n2) if self.expert_bias else 0
        return n1 * k1 + n2 * k2 + bias

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert, biases included."""
        return self._mlp_params(self.expert_intermediate_size)

    @property
    def shared_expert_params(self) -> int:
        return self._mlp_params(self.shared_intermediate_size) if self.num_shared_experts else 0

    @property
    def moe_params(self) -> int:
        """All routed and shared expert parameters of the model."""
        per_layer = self.num_experts * self.expert_params + self.num_shared_experts * self.shared_expert_params
        return self.num_moe_layers * per_layer

    @property
    def total_params(self) -> int:
        return self.moe_params + self.non_expert_params

    @property
    def active_params(self) -> int:
        per_layer = self.top_k * self.expert_params + self.num_shared_experts * self.shared_expert_params
        return self.num_moe_layers * per_layer + self.non_expert_params


# --------------------------------------------------------------------------------------------
# Hugging Face config.json parsing

class _Cfg:
    """Field access that names the missing or bad field in a one-line MoeprofError."""

    def __init__(self, data: Mapping[str, Any], source: str, family: str):
        self.data, self.source, self.family = data, source, family

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, key: str, default: int | None = None, *, min_value: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is None:
                raise MoeprofError(f"{self.source}: {self.family} config is missing field {key!r}")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < min_value:
            raise MoeprofError(
                f"{self.source}: field {key!r} must be an integer >= {min_value}, got {value!r}"
            )
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        return bool(value)


def _attention_params(c: _Cfg, h: int) -> int:
    """Per-layer attention projection parameters (MLA or GQA)."""
    heads = c.int("num_attention_heads")
    if c.has("kv_lora_rank"):  # DeepSeek multi-head latent attention
        nope, rope = c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim")
        v_dim, kv_rank = c.int("v_head_dim"), c.int("kv_lora_rank")
        qk_dim = nope + rope
        if c.has("q_lora_rank"):
            q_rank = c.int("q_lora_rank")
            q = h * q_rank + q_rank + q_rank * heads * qk_dim   # q_a, q_a norm, q_b
        else:
            q = h * heads * qk_dim
        kv = h * (kv_rank + rope) + kv_rank + kv_rank * heads * (nope + v_dim)  # kv_a, norm, kv_b
        return q + kv + heads * v_dim * h
    kv_heads = c.int("num_key_value_heads", heads)
    head_dim = c.int("head_dim", h // heads)
    params = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h
    if c.bool("attention_bias", False):
        params += heads * head_dim + 2 * kv_heads * head_dim + h
    return params


def _non_expert_params(
    c: _Cfg, h: int, layers: int, moe_layers: int, experts: int, dense_intermediate: int, router_bias: bool
) -> int:
    vocab = c.int("vocab_size")
    embeddings = vocab * h * (1 if c.bool("tie_word_embeddings", False) else 2)
    attention = layers * _attention_params(c, h)
    dense_mlp = (layers - moe_layers) * 3 * h * dense_intermediate   # gated dense MLP layers
    routers = moe_layers * (experts * h + (experts if router_bias else 0))
    norms = (2 * layers + 1) * h
    return embeddings + attention + dense_mlp + routers + norms


def _family(cfg: Mapping[str, Any]) -> str:
    model_type = str(cfg.get("model_type", "")).lower()
    if model_type.startswith("llama4") or "interleave_moe_layer_step" in cfg:
        return "llama4"
    if model_type == "gpt_oss" or "experts_per_token" in cfg or "swiglu_limit" in cfg:
        return "gpt-oss"
    if "n_routed_experts" in cfg:
        return "deepseek"
    if "num_experts" in cfg and "moe_intermediate_size" in cfg:
        return "qwen-moe"
    if "num_local_experts" in cfg:
        return "mixtral"
    raise MoeprofError(
        "not a recognized MoE config: expected one of the fields "
        "'num_local_experts', 'n_routed_experts', 'num_experts' (+ 'moe_intermediate_size')"
    )


def model_from_hf_config(config: Mapping[str, Any], name: str, source: str = "config.json") -> MoeModel:
    """Build a MoeModel from a Hugging Face config dict (GPT-OSS, DeepSeek-V3, Qwen3-MoE, Mixtral, Llama-4)."""
    if not isinstance(config, Mapping):
        raise MoeprofError(f"{source}: expected a JSON object at top level")
    text = config.get("text_config")
    if isinstance(text, Mapping):  # Llama-4 (and other multimodal wrappers) nest the LM config
        config = {**text, "model_type": text.get("model_type", config.get("model_type", ""))}
    try:
        family = _family(config)
    except MoeprofError as exc:
        raise MoeprofError(f"{source}: {exc}") from None
    c = _Cfg(config, source, family)
    h = c.int("hidden_size")
    layers = c.int("num_hidden_layers")
    shared, shared_i, bias, router_bias = 0, 0, False, False

    if family == "gpt-oss":
        experts = c.int("num_local_experts")
        top_k = c.int("num_experts_per_tok") if c.has("num_experts_per_tok") else c.int("experts_per_token")
        inter = c.int("intermediate_size")
        moe_layers, dense_i, bias, router_bias = layers, 0, True, True
    elif family == "mixtral":
        experts, top_k = c.int("num_local_experts"), c.int("num_experts_per_tok")
        inter = c.int("intermediate_size")
        moe_layers, dense_i = layers, 0
    elif family == "deepseek":
        experts, top_k = c.int("n_routed_experts"), c.int("num_experts_per_tok")
        inter = c.int("moe_intermediate_size")
        shared = c.int("n_shared_experts", 0, min_value=0)
        shared_i = inter
        first_dense = c.int("first_k_dense_replace", 0, min_value=0)
        freq = c.int("moe_layer_freq", 1)
        moe_layers = sum(1 for i in range(layers) if i >= first_dense and i % freq == 0)
        dense_i = c.int("intermediate_size") if moe_layers < layers else 0
    elif family == "qwen-moe":
        experts, top_k = c.int("num_experts"), c.int("num_experts_per_tok")
        inter = c.int("moe_intermediate_size")
        step = c.int("decoder_sparse_step", 1)
        dense_only = set(config.get("mlp_only_layers") or [])
        moe_layers = sum(1 for i in range(layers) if i not in dense_only and (i + 1) % step == 0)
        dense_i = c.int("intermediate_size") if moe_layers < layers else 0
        if c.has("shared_expert_intermediate_size"):  # Qwen2-MoE style shared expert
            shared_i = c.int("shared_expert_intermediate_size", 0, min_value=0)
            shared = 1 if shared_i else 0
    else:  # llama4: routed experts + one shared expert in every MoE layer, dense MLP elsewhere
        experts, top_k = c.int("num_local_experts"), c.int("num_experts_per_tok")
        inter = c.int("intermediate_size")
        if isinstance(config.get("moe_layers"), list):
            moe_layers = len(config["moe_layers"])
        else:
            step = c.int("interleave_moe_layer_step", 1)
            moe_layers = len(range(step - 1, layers, step))
        shared, shared_i = 1, inter
        dense_i = c.int("intermediate_size_mlp") if moe_layers < layers else 0

    if top_k > experts:
        raise MoeprofError(f"{source}: top-k {top_k} exceeds the {experts} routed experts")
    return MoeModel(
        name=name,
        hidden_size=h,
        expert_intermediate_size=inter,
        num_experts=experts,
        top_k=top_k,
        num_moe_layers=moe_layers,
        num_layers=layers,
        num_shared_experts=shared,
        shared_intermediate_size=shared_i,
        gated=True,  # every supported family uses a gated (SwiGLU) expert MLP
        expert_bias=bias,
        non_expert_params=_non_expert_params(c, h, layers, moe_layers, experts, dense_i, router_bias),
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Presets: the relevant fields of each published config.json (huggingface.co/<repo>/blob/main/config.json)

_PRESET_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt-oss-120b": ("openai/gpt-oss-120b", {
        "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
        "num_local_experts": 128, "num_experts_per_tok": 4, "num_hidden_layers": 36,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "attention_bias": True,
        "vocab_size": 201088, "tie_word_embeddings": False,
    }),  # model card: 116.8B total, 5.1B active
    "gpt-oss-20b": ("openai/gpt-oss-20b", {
        "model_type": "gpt_oss", "hidden_size": 2880, "intermediate_size": 2880,
        "num_local_experts": 32, "num_experts_per_tok": 4, "num_hidden_layers": 24,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64, "attention_bias": True,
        "vocab_size": 201088, "tie_word_embeddings": False,
    }),  # model card: 20.9B total, 3.6B active
    "deepseek-v3": ("deepseek-ai/DeepSeek-V3", {
        "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "num_hidden_layers": 61, "first_k_dense_replace": 3, "moe_layer_freq": 1,
        "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "vocab_size": 129280, "tie_word_embeddings": False,
    }),  # tech report: 671B total (+14B MTP module, not modelled), 37B active
    "qwen3-235b-a22b": ("Qwen/Qwen3-235B-A22B", {
        "model_type": "qwen3_moe", "hidden_size": 4096, "intermediate_size": 12288,
        "moe_intermediate_size": 1536, "num_experts": 128, "num_experts_per_tok": 8,
        "num_hidden_layers": 94, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
        "vocab_size": 151936, "tie_word_embeddings": False,
    }),  # model card: 235B total, 22B active
    "qwen3-30b-a3b": ("Qwen/Qwen3-30B-A3B", {
        "model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
        "num_hidden_layers": 48, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "vocab_size": 151936, "tie_word_embeddings": False,
    }),  # model card: 30.5B total, 3.3B active
    "mixtral-8x7b": ("mistralai/Mixtral-8x7B-v0.1", {
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "tie_word_embeddings": False,
    }),  # Mixtral paper: 46.7B total, 12.9B active
    "llama-4-maverick": ("meta-llama/Llama-4-Maverick-17B-128E", {
        "model_type": "llama4", "text_config": {
            "model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
            "intermediate_size_mlp": 16384, "num_local_experts": 128, "num_experts_per_tok": 1,
            "num_hidden_layers": 48, "interleave_moe_layer_step": 2,
            "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 202048, "tie_word_embeddings": False,
        },
    }),  # model card: 400B total (text + vision; vision encoder not modelled), 17B active
}

_ALIASES = {
    "gpt-oss": "gpt-oss-120b", "gptoss-120b": "gpt-oss-120b", "gptoss-20b": "gpt-oss-20b",
    "deepseek-v3-0324": "deepseek-v3", "deepseek-r1": "deepseek-v3",
    "qwen3-235b": "qwen3-235b-a22b", "qwen3-30b": "qwen3-30b-a3b",
    "mixtral-8x7b-v0.1": "mixtral-8x7b", "mixtral": "mixtral-8x7b",
    "llama-4-maverick-17b-128e": "llama-4-maverick", "llama-4-maverick-17b-128e-instruct": "llama-4-maverick",
    "maverick": "llama-4-maverick", "llama4-maverick": "llama-4-maverick",
}

_PRESETS: dict[str, MoeModel] = {
    key: model_from_hf_config(cfg, key, source=f"huggingface.co/{repo}/config.json")
    for key, (repo, cfg) in _PRESET_CONFIGS.items()
}


def model_names() -> list[str]:
    return list(_PRESETS)


def all_models() -> tuple[MoeModel, ...]:
    return tuple(_PRESETS.values())


def load_hf_config(path: str | os.PathLike[str]) -> MoeModel:
    """Read a local config.json (or a folder holding one). No network."""
    path = os.fspath(path)
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise MoeprofError(f"no such config file: {file}")
    from moeprof.untrusted import clean_json, load_json

    data = clean_json(load_json(Path(file), "config.json"))
    if not isinstance(data, dict):
        raise MoeprofError(f"{file}: expected a JSON object, got {type(data).__name__}")
    name = os.path.basename(os.path.dirname(os.path.abspath(file))) or "model"
    return model_from_hf_config(data, name=name, source=file)


def _normalize(name: str) -> str:
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    return key.split("/", 1)[1] if key.count("/") == 1 and not key.startswith((".", "/")) else key


def get_model(name_or_path: str | MoeModel) -> MoeModel:
    """A preset by name (case-insensitive, HF repo ids accepted) or a local config.json path."""
    if isinstance(name_or_path, MoeModel):
        return name_or_path
    if os.path.exists(name_or_path):
        return load_hf_config(name_or_path)
    key = _normalize(name_or_path)
    key = _ALIASES.get(key, key)
    if key in _PRESETS:
        return _PRESETS[key]
    if name_or_path.endswith(".json") or name_or_path.startswith((".", "/", "~")):
        raise MoeprofError(f"no such config file: {name_or_path}")
    raise MoeprofError(
        f"unknown model {name_or_path!r}; valid: {', '.join(model_names())}, or a path to a config.json"
    )
