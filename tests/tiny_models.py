"""A tiny randomly initialised model of every supported family (the architecture table's tests, the
conformance suite tests/core/test_conformance.py, and the ``tiny_lm`` fixture): the same sizes for all, so
that a test can check every module's shape. Built from a config, nothing downloaded; a few ms each."""

import transformers as T

H, FF, L, V = 32, 64, 2, 101

# what every decoder-only config of the LLaMA lineage takes
_DECODER = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=FF, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)

TINY = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=H, n_layer=L, n_head=4, n_inner=FF, n_positions=64)),
    "gpt_neo": lambda: T.GPTNeoForCausalLM(T.GPTNeoConfig(vocab_size=V, hidden_size=H, num_layers=L, num_heads=4,
        intermediate_size=FF, attention_types=[[["global", "local"], 1]], max_position_embeddings=64, bos_token_id=0, eos_token_id=0)),
    "gptj": lambda: T.GPTJForCausalLM(T.GPTJConfig(vocab_size=V, n_embd=H, n_layer=L, n_head=4, n_inner=FF, rotary_dim=4, n_positions=64, bos_token_id=0, eos_token_id=0)),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        intermediate_size=FF, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)),
    "opt": lambda: T.OPTForCausalLM(T.OPTConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L,
        num_attention_heads=4, ffn_dim=FF, word_embed_proj_dim=H, max_position_embeddings=64, bos_token_id=0,
        eos_token_id=0, pad_token_id=0)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**_DECODER)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**_DECODER)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**_DECODER)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**_DECODER, head_dim=8)),
    "smollm3": lambda: T.SmolLM3ForCausalLM(T.SmolLM3Config(**_DECODER)),
    # Granite's four multipliers away from 1, so that they are exercised (Granite-3's own 12 / 0.22 / 8 swamp a
    # random model's MLP: its embeddings, drawn 10x larger than a trained model's, times 12)
    "granite": lambda: T.GraniteForCausalLM(T.GraniteConfig(**_DECODER, embedding_multiplier=4.0,
        residual_multiplier=0.5, logits_scaling=2.0, attention_multiplier=0.125)),
    "olmo2": lambda: T.Olmo2ForCausalLM(T.Olmo2Config(**_DECODER)),
    "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**_DECODER, head_dim=8)),
    # a sliding window shorter than the test prompts, so that local layers differ from global ones
    "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**_DECODER, head_dim=8, sliding_window=4)),
    "gemma3_text": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(**_DECODER, head_dim=8, sliding_window=4)),
    "phi3": lambda: T.Phi3ForCausalLM(T.Phi3Config(**_DECODER)),
    "bert": lambda: T.BertForMaskedLM(T.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        intermediate_size=FF, max_position_embeddings=64)),
    # RoBERTa's positions start after its padding id: 64 + 2 + a margin
    "roberta": lambda: T.RobertaForMaskedLM(T.RobertaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L,
        num_attention_heads=4, intermediate_size=FF, max_position_embeddings=70, pad_token_id=1)),
    "distilbert": lambda: T.DistilBertForMaskedLM(T.DistilBertConfig(vocab_size=V, dim=H, n_layers=L, n_heads=4,
        hidden_dim=FF, max_position_embeddings=64)),
    "modernbert": lambda: T.ModernBertForMaskedLM(T.ModernBertConfig(vocab_size=V, hidden_size=H,
        num_hidden_layers=L, num_attention_heads=4, intermediate_size=FF, max_position_embeddings=64,
        global_attn_every_n_layers=2, local_attention=4, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        cls_token_id=0, sep_token_id=0)),
}
