"""Experiment (docs/benchmarks.md, "What else an edit request spends"): 8 greedy tokens on smollm2-135m with a
hand-written loop over the KV cache against transformers' ``generate``.

    PYTHONPATH=. python benchmarks/experiments/greedy_loop.py
"""
import time, torch
torch.set_num_threads(2)
from knlab.core.models import load_model
lm = load_model("smollm2-135m", device="cpu")
ids = lm.tokenizer("The capital of Austria is", return_tensors="pt").input_ids
m = lm.model
with torch.no_grad():
    for _ in range(2):
        t=time.perf_counter()
        out = m(input_ids=ids, use_cache=True, logits_to_keep=1); pkv=out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t1=time.perf_counter()
        for i in range(7):
            out = m(input_ids=nxt, past_key_values=pkv, use_cache=True); pkv=out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        print("prefill", t1-t, "7 steps", time.perf_counter()-t1)
    t=time.perf_counter(); m.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=0); print("generate", time.perf_counter()-t)
    t=time.perf_counter(); m.generate(ids, do_sample=False, max_new_tokens=8, pad_token_id=0); print("generate", time.perf_counter()-t)
