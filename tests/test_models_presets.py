"""MoE presets and Hugging Face config.json loading."""

from __future__ import annotations

import json

import pytest

from moeprof.errors import MoeprofError
from moeprof.roofline.shapes import get_model, load_hf_config, model_names


def test_gpt_oss_120b_expert_params():
    m = get_model("gpt-oss-120b")
    assert (m.hidden_size, m.expert_intermediate_size, m.num_experts, m.top_k, m.num_moe_layers) == (
        2880, 2880, 128, 4, 36)
    assert m.gated and m.expert_bias and m.num_shared_experts == 0
    assert m.gate_up_shape() == (5760, 2880) and m.down_shape() == (2880, 2880)
    assert m.intermediate_size == 2880  # alias used by the profiler
    # gate_up 2880*5760 = 16,588,800 + bias 5,760 + down 2880*2880 = 8,294,400 + bias 2,880
    #   = 24,891,840 (~24.89M)
    assert m.expert_params == 24_891_840


def test_gpt_oss_120b_non_expert_params_by_hand():
    m = get_model("gpt-oss-120b")
    embeddings = 2 * 201088 * 2880                              # embed + untied lm_head = 1,158,266,880
    attn = 2880 * 64 * 64 + 2 * 2880 * 8 * 64 + 64 * 64 * 2880  # q, k, v, o = 26,542,080
    attn += 64 * 64 + 2 * 8 * 64 + 2880                         # biases = 8,000
    router = 128 * 2880 + 128                                   # = 368,768
    norms = (2 * 36 + 1) * 2880                                 # = 210,240
    assert m.non_expert_params == embeddings + 36 * (attn + router) + norms == 2_127_555_648


def test_gpt_oss_20b():
    m = get_model("gpt-oss-20b")
    assert (m.num_experts, m.top_k, m.num_moe_layers, m.hidden_size) == (32, 4, 24, 2880)


@pytest.mark.parametrize(
    "name, total, active",
    [
        # model cards / papers; active None where the card counts it differently (GPT-OSS excludes embeddings)
        ("gpt-oss-120b", 116.8e9, None),
        ("gpt-oss-20b", 20.9e9, None),
        ("deepseek-v3", 671e9, 37e9),
        ("qwen3-235b-a22b", 235e9, 22e9),
        ("qwen3-30b-a3b", 30.5e9, 3.3e9),
        ("mixtral-8x7b", 46.7e9, 12.9e9),
        ("llama-4-maverick", 400e9, 17e9),
    ],
)
def test_presets_match_model_card_totals(name, total, active):
    m = get_model(name)
    assert m.total_params == pytest.approx(total, rel=0.01)
    if active is not None:
        assert m.active_params == pytest.approx(active, rel=0.02)


def test_preset_shapes():
    ds = get_model("deepseek-v3")
    assert (ds.num_experts, ds.top_k, ds.num_shared_experts, ds.num_moe_layers, ds.num_layers) == (256, 8, 1, 58, 61)
    assert ds.expert_params == 3 * 7168 * 2048 and not ds.expert_bias
    mav = get_model("llama-4-maverick")
    assert (mav.num_experts, mav.top_k, mav.num_shared_experts, mav.num_moe_layers) == (128, 1, 1, 24)
    q = get_model("qwen3-235b-a22b")
    assert (q.num_experts, q.top_k, q.expert_intermediate_size, q.num_moe_layers) == (128, 8, 1536, 94)
    mx = get_model("mixtral-8x7b")
    assert (mx.num_experts, mx.top_k, mx.expert_intermediate_size) == (8, 2, 14336)


@pytest.mark.parametrize("alias", ["GPT-OSS-120B", "openai/gpt-oss-120b", "gpt_oss_120b"])
def test_get_model_aliases(alias):
    assert get_model(alias).name == "gpt-oss-120b"


def test_get_model_unknown_lists_names():
    with pytest.raises(MoeprofError) as err:
        get_model("llama-2-70b")
    assert all(n in str(err.value) for n in model_names())


def _write(tmp_path, cfg, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


GPT_OSS_CONFIG = {  # openai/gpt-oss-120b config.json, with fields we ignore
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880,
    "intermediate_size": 2880, "num_local_experts": 128, "num_experts_per_tok": 4, "experts_per_token": 4,
    "num_hidden_layers": 36, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "attention_bias": True, "vocab_size": 201088, "tie_word_embeddings": False, "swiglu_limit": 7.0,
    "layer_types": ["sliding_attention", "full_attention"] * 18, "rope_scaling": {"factor": 32.0},
    "quantization_config": {"quant_method": "mxfp4"},
}


def test_load_gpt_oss_config_matches_preset(tmp_path):
    folder = tmp_path / "gpt-oss-120b-local"
    folder.mkdir()
    _write(folder, GPT_OSS_CONFIG)
    m = get_model(str(folder))  # a folder holding config.json
    p = get_model("gpt-oss-120b")
    assert m.name == "gpt-oss-120b-local"
    for field in ("hidden_size", "expert_intermediate_size", "num_experts", "top_k", "num_moe_layers",
                  "expert_bias", "non_expert_params"):
        assert getattr(m, field) == getattr(p, field), field


def test_load_deepseek_config(tmp_path):
    cfg = {"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
           "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
           "num_experts_per_tok": 8, "num_hidden_layers": 61, "first_k_dense_replace": 3, "moe_layer_freq": 1,
           "num_attention_heads": 128, "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
           "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "vocab_size": 129280}
    m = load_hf_config(_write(tmp_path, cfg))
    assert (m.num_experts, m.top_k, m.num_shared_experts, m.shared_intermediate_size) == (256, 8, 1, 2048)
    assert (m.num_moe_layers, m.num_layers) == (58, 61)  # 61 layers, first 3 dense


def test_load_qwen3_moe_config_with_dense_layers(tmp_path):
    cfg = {"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768,
           "num_experts": 128, "num_experts_per_tok": 8, "num_hidden_layers": 48, "decoder_sparse_step": 1,
           "mlp_only_layers": [0, 1], "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
           "vocab_size": 151936}
    m = load_hf_config(_write(tmp_path, cfg))
    assert (m.num_experts, m.top_k, m.expert_intermediate_size, m.num_moe_layers) == (128, 8, 768, 46)
    # the two dense layers add 2 * 3 * 2048 * 6144 params over the all-MoE preset's non-expert count,
    # minus their two routers (2 * 128 * 2048)
    assert m.non_expert_params - get_model("qwen3-30b-a3b").non_expert_params == 2 * 3 * 2048 * 6144 - 2 * 128 * 2048


def test_load_mixtral_config(tmp_path):
    cfg = {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_local_experts": 8,
           "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000}
    m = load_hf_config(_write(tmp_path, cfg))
    assert (m.num_experts, m.top_k, m.expert_intermediate_size, m.expert_bias) == (8, 2, 14336, False)


def test_load_llama4_nested_config(tmp_path):
    text = {"model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
            "intermediate_size_mlp": 16384, "num_local_experts": 128, "num_experts_per_tok": 1,
            "num_hidden_layers": 48, "interleave_moe_layer_step": 2, "num_attention_heads": 40,
            "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 202048}
    m = load_hf_config(_write(tmp_path, {"model_type": "llama4", "text_config": text, "vision_config": {}}))
    assert (m.num_experts, m.top_k, m.num_moe_layers, m.num_shared_experts) == (128, 1, 24, 1)
    # an explicit moe_layers list wins over the interleave step
    m2 = load_hf_config(_write(tmp_path, {"text_config": {**text, "moe_layers": [1, 3, 5]}}, "c2.json"))
    assert m2.num_moe_layers == 3


def test_missing_field_is_named(tmp_path):
    cfg = {k: v for k, v in GPT_OSS_CONFIG.items() if k != "hidden_size"}
    with pytest.raises(MoeprofError, match="missing field 'hidden_size'"):
        load_hf_config(_write(tmp_path, cfg))


def test_bad_field_value_is_named(tmp_path):
    with pytest.raises(MoeprofError, match="'num_local_experts' must be an integer"):
        load_hf_config(_write(tmp_path, {**GPT_OSS_CONFIG, "num_local_experts": "many"}))


def test_top_k_above_experts_rejected(tmp_path):
    with pytest.raises(MoeprofError, match="top-k 4 exceeds the 2"):
        load_hf_config(_write(tmp_path, {**GPT_OSS_CONFIG, "num_local_experts": 2}))


def test_dense_config_rejected(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32}
    with pytest.raises(MoeprofError, match="not a recognized MoE config"):
        load_hf_config(_write(tmp_path, cfg))


def test_not_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(MoeprofError, match="not valid JSON"):
        get_model(str(path))


def test_missing_file():
    with pytest.raises(MoeprofError, match="no such config file"):
        get_model("/nonexistent/dir/config.json")
