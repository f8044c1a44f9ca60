"""Tiny DeepSeek-V3 configs (HF config keys) shared by the multi-process engine tests."""

# 3 layers, the first dense, 8 routed experts, top-3 in 2 of 4 groups.
TINY_MODEL = dict(
    vocab_size=96, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
    num_experts_per_tok=3, n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5,
    kv_lora_rank=32, q_lora_rank=48, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12,
    max_position_embeddings=512, initializer_range=0.2, num_nextn_predict_layers=0,
)  # fmt: skip

# Smaller still for the Ray tests (each actor imports torch and builds the model): 2 layers, 4 experts.
RAY_MODEL = dict(
    vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=2, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=4,
    v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1, initializer_range=0.3,
    max_position_embeddings=256,
)  # fmt: skip
