"""The paper's experiments as claims (docs/paper.md, section 8), one module per instrument: ``neurons`` (KN
attribution and suppression), ``tracing`` (causal traces of facts and grammar), ``editing`` (KN edits and
ROME). Each claim is a function ``run(lm, n, progress) -> ModelRun``; ``studies.paper`` registers them."""
