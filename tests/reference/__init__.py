"""Straightforward reference implementations: what knlab's fast methods are tested equal to.

The rule: a module here imports nothing from ``knlab``. It may use only what comes with the loaded
model it is handed (``lm.model``, ``lm.tokenizer``, ``lm.n_layers``, ``lm.masked``, and the model's own
description of where its modules are, ``lm.arch.module(kind, layer)`` / ``lm.arch.embed``, resolved with
``lm.model.get_submodule``) and re-derives everything else from the published algorithm (the subject's
token span, the prediction position, the restore window, the prompt template, the KL prompt, the hooks).
Otherwise a bug in a shared knlab helper would sit on both sides of an equality test and never show.
The code keeps the original papers' loop structure (one forward pass per cell, one forward/backward per
layer, one prompt at a time): slow, and obviously right. ``tests/test_reference.py`` enforces the rule.

    trace.py  causal tracing (Meng et al., ROME's causal_trace.py)    trace_straightforward
    ig.py     knowledge-neuron integrated gradients (Dai et al.)       ig_straightforward
    rome.py   ROME's k*, v* and rank-one update (compute_u / compute_v) rome_straightforward
    hooks.py  read or replace a module's input / output with plain torch hooks
"""
