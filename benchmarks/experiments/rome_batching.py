"""Experiment (docs/benchmarks.md, "Tried and dropped"): does batching several users' ROME v* problems into
one optimisation pay? k copies of one problem's rows in one batch, 6 Adam steps each, on smollm2-135m at
layer 5; prints seconds per step and per problem. Run from the repository root:

    PYTHONPATH=. python benchmarks/experiments/rome_batching.py
"""
import time, torch, dataclasses
torch.set_num_threads(2)
from knlab.core.models import load_model
from knlab.methods.rome import params_for
from knlab.methods.rome.compute_v import build_problem, compute_v
from knlab.methods.rome.context_templates import context_templates
from knlab.core.tokens import first_token
lm = load_model("smollm2-135m", device="cpu")
params = dataclasses.replace(params_for(lm), v_steps=6, early_stop_loss=0.0)
ctx = context_templates(lm, params.template_seed)
tid = lm.tokenizer(" Baku")["input_ids"]
for k in [1,2,4,8,1]:
    prob = build_problem(lm, "The capital of {} is", "Austria", tid, ctx*k)
    compute_v(lm, 5, dataclasses.replace(prob), dataclasses.replace(params, v_steps=2))
    t=time.perf_counter(); compute_v(lm, 5, prob, params); dt=time.perf_counter()-t
    print(k, prob.batch.input_ids.shape, f"{dt/6:.3f} s/step, per problem {dt/6/k:.3f}")
