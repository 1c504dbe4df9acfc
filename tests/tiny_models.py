"""A tiny randomly initialised model of every supported family (the architecture table's tests, and the
``tiny_lm`` fixture that runs every method on each family)."""

import transformers as T

H, FF, L, V = 32, 64, 2, 101

TINY = {
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=V, n_embd=H, n_layer=L, n_head=4, n_inner=FF, n_positions=64)),
    "gpt_neo": lambda: T.GPTNeoForCausalLM(T.GPTNeoConfig(vocab_size=V, hidden_size=H, num_layers=L, num_heads=4,
        intermediate_size=FF, attention_types=[[["global", "local"], 1]], max_position_embeddings=64, bos_token_id=0, eos_token_id=0)),
    "gptj": lambda: T.GPTJForCausalLM(T.GPTJConfig(vocab_size=V, n_embd=H, n_layer=L, n_head=4, n_inner=FF, rotary_dim=4, n_positions=64, bos_token_id=0, eos_token_id=0)),
    "gpt_neox": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        intermediate_size=FF, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)),
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=FF, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=FF, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=FF, max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "bert": lambda: T.BertForMaskedLM(T.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=4,
        intermediate_size=FF, max_position_embeddings=64)),
}
