"""ROME: knlab's fast v* optimisation vs the straightforward implementation, in the same process.

The straightforward implementation is laid out as ROME's reference ``compute_v`` is: every optimisation
step re-tokenizes every context-template prompt (and the KL prompt "{subject} is a") and runs each one
through the whole model on its own, with a hook on the edited layer's MLP output projection adding the
delta at the subject's last token; the losses are summed and there is one backward per step. Same
templates, same k* / u, same loss (NLL of the target over every template + kl_factor x KL + weight decay),
same early stop, norm clamp, Adam settings and right vector as ``knlab.methods.rome``; knlab instead runs all rows
as one aligned batch, keeps the prefix before the subject as a KV cache, replays the blocks below the
edited layer and differentiates w.r.t. the delta only.

Prints per-fact and mean seconds, the speed ratio, the largest relative differences between the right
vectors and between the u's, and whether each edit takes (p(new) > p(old) once applied).

    python benchmarks/bench_edit.py [--facts 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knlab.core.nethook import Trace  # noqa: E402
from knlab.methods.rome.compute_v import KL_PROMPT  # noqa: E402
from knlab.methods.rome.repr_tools import prompt_template  # noqa: E402


@dataclass
class StraightforwardEdit:
    """What ``rome()`` puts in its RomeEdit (u, and the right vector v: W <- W + v u^T), plus v* and the
    optimisation's outcome for comparison. Unpacks as ``u, v = rome_straightforward(...)``."""

    u: torch.Tensor
    v: torch.Tensor
    v_star: torch.Tensor
    k_star: torch.Tensor
    key: torch.Tensor
    steps: int
    loss: float

    def __iter__(self):
        return iter((self.u, self.v))


def _subject_last(tok, template: str, subject: str) -> int:
    return len(tok(template.split("{}")[0] + subject)["input_ids"]) - 1


@torch.no_grad()
def _key(lm, layer: int, text: str, index: int) -> torch.Tensor:
    """The input of the MLP output projection at ``index``, one prompt, one forward pass."""
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]], device=lm.device)
    with Trace(lm.model, lm.arch.module("mlp_out", layer), retain_output=False, retain_input=True) as tr:
        lm.model(input_ids=ids, use_cache=False)
    return tr.input[0, index].float()


def rome_straightforward(lm, prompt, subject, target, layer, params, contexts, mom2) -> StraightforwardEdit:
    tok = lm.tokenizer
    module = lm.arch.module("mlp_out", layer)
    template = prompt_template(prompt, subject)
    subject = subject.strip()
    target_ids = tok(" " + target.strip(), add_special_tokens=False)["input_ids"]

    # k* and u: the key at the subject's last token of every context template, one prompt at a time
    keys = []
    for c in contexts:
        t = c.replace("{}", template, 1)
        keys.append(_key(lm, layer, t.replace("{}", subject), _subject_last(tok, t, subject)))
    k_star = torch.stack(keys).mean(0)
    u = torch.linalg.solve(mom2.double(), k_star.double()).float() if mom2 is not None else k_star.clone()
    u = u / u.norm()

    def rewriting_prompts():
        """(token ids, subject-last index, first target position) of every template, tokenized afresh."""
        out = []
        for c in contexts:
            t = c.replace("{}", template, 1)
            ids = tok(t.replace("{}", subject))["input_ids"]
            out.append((ids + target_ids[:-1], _subject_last(tok, t, subject), len(ids) - 1))
        return out

    def kl_prompt():
        return tok(KL_PROMPT.replace("{}", subject))["input_ids"], _subject_last(tok, KL_PROMPT, subject)

    def run(ids, index, delta):
        """Logits [T, V] of one prompt, ``delta`` added to the MLP output at ``index`` (unless None)."""
        def add(out, _name):
            out = out.clone()
            out[0, index] = out[0, index] + delta.to(out.dtype)
            return out
        with Trace(lm.model, module, retain_output=True, edit_output=add if delta is not None else None) as tr:
            logits = lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False).logits[0]
        return logits, tr.output[0, index]

    # before the edit: the MLP output at the subject of the plain ("{}") template, and the KL reference
    with torch.no_grad():
        ids, index, _ = rewriting_prompts()[0]
        _, target_init = run(ids, index, None)
        target_init = target_init.float().clone()
    kl_init = None  # the KL reference: the first step's distribution (delta = 0), as ROME's code takes it

    delta = torch.zeros(target_init.shape[0], device=lm.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=params.v_lr)
    max_norm = params.clamp_norm_factor * target_init.norm()
    tgt = torch.tensor(target_ids, device=lm.device)
    step, loss_value = 0, float("nan")
    for step in range(params.v_steps):
        opt.zero_grad()
        nll = []
        for ids, index, first in rewriting_prompts():
            logits, _ = run(ids, index, delta)
            logp = torch.log_softmax(logits[first:first + len(target_ids)].float(), -1)
            nll.append(-logp[torch.arange(len(target_ids)), tgt].sum() / len(target_ids))
        ids, index = kl_prompt()
        logits, _ = run(ids, index, delta)
        kl_logp = torch.log_softmax(logits[index].float(), -1)[None]
        if kl_init is None:
            kl_init = kl_logp.detach()
        kl = torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="batchmean")
        wd = params.v_weight_decay * (delta.norm() / target_init.norm() ** 2)
        loss = torch.stack(nll).mean() + params.kl_factor * kl + wd
        loss_value = float(loss.detach())
        if loss_value < params.early_stop_loss or step == params.v_steps - 1:
            break
        loss.backward()
        opt.step()
        with torch.no_grad():
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    v_star = target_init + delta.detach()

    # the right vector: the edited projection maps the plain prompt's key to v*
    t = contexts[0].replace("{}", template, 1)
    key = _key(lm, layer, t.replace("{}", subject), _subject_last(tok, t, subject))
    right = (v_star - target_init) / torch.dot(key, u)
    return StraightforwardEdit(u, right, v_star, k_star, key, step + 1, loss_value)


def rel_diff(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--facts", type=int, default=5)
    ap.add_argument("--short-steps", type=int, default=3, help="steps of the second, short comparison")
    ap.add_argument("--model", default="world-gpt", help="e.g. smollm2-135m (edits the facts it knows)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from knlab.core.models import load_model
    from knlab.methods.predict import encode, first_token, next_token_probs
    from knlab.methods.rome import params_for, rome
    from knlab.studies.edit import rome_layer
    from knlab.world.corpora import covariance_corpus
    from knlab.methods.rome.context import context_templates
    import knlab.methods.rome.layer_stats as LS
    from knlab.core.specs import applied
    from knlab.world import facts as F

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    lm = load_model(args.model, device="cpu")
    params = params_for(lm)  # the model's family / own settings (world-gpt: the published GPT-2 XL ones)
    print(f"{lm.spec}: {params}")
    # one-off work, reported apart: the default layer (a causal trace), templates, covariance
    t0 = time.perf_counter()
    layer = rome_layer(lm)
    t_layer = time.perf_counter() - t0
    t0 = time.perf_counter()
    contexts = context_templates(lm, params.template_seed)
    t_templates = time.perf_counter() - t0
    measured = []
    measure = LS.measure_mom2
    LS.measure_mom2 = lambda *a, **k: measured.append(1) or measure(*a, **k)
    try:
        t0 = time.perf_counter()
        corpus = covariance_corpus(params.mom2_corpus)
        mom2 = LS.layer_stats(lm, layer, corpus, tokens=params.mom2_tokens)
        t_mom2 = time.perf_counter() - t0
    finally:
        LS.measure_mom2 = measure
    how = "measured over the world corpus" if measured else "loaded from the disk cache"
    print(f"one-off: default layer {layer} in {t_layer:.2f} s, {len(contexts)} context templates in "
          f"{t_templates:.2f} s, covariance (layer {layer}) {how} in {t_mom2:.2f} s")

    rel = F.relation("P36")
    # facts the model answers (its first token), so that "takes" means p(new) overtook the real answer
    known = [f for f in rel.facts
             if int(next_token_probs(lm, encode(lm, F.causal_prompt(rel.train_templates[0], f.subject))).argmax())
             == first_token(lm, f.object)]
    facts = list(known[:args.facts + 1])
    rome(lm, F.causal_prompt(rel.train_templates[0], facts[0].subject), facts[0].subject, facts[1].object,
         layer, params, corpus=corpus)  # warm-up
    fast_edit, fast_wall, slow, dv, du, dvs, dshort = [], [], [], [], [], [], []
    first_ref = None
    for i, f in enumerate(facts[:args.facts]):
        prompt = F.causal_prompt(rel.train_templates[0], f.subject)
        new = facts[i + 1].object
        t0 = time.perf_counter()
        res = rome(lm, prompt, f.subject, new, layer, params, corpus=corpus)
        fast_wall.append(time.perf_counter() - t0)
        fast_edit.append(res.seconds["edit"])
        t0 = time.perf_counter()
        ref = rome_straightforward(lm, prompt, f.subject, new, layer, params, contexts, mom2)
        slow.append(time.perf_counter() - t0)
        first_ref = first_ref if i else ref
        dv.append(rel_diff(res.edit.v, ref.v))
        du.append(rel_diff(res.edit.u, ref.u))
        dvs.append(rel_diff(res.v_star, ref.v_star))
        # the same comparison after a short run, before Adam has amplified float rounding (see below)
        short = dataclasses.replace(params, v_steps=args.short_steps)
        dshort.append(rel_diff(rome(lm, prompt, f.subject, new, layer, short, corpus=corpus).v_star,
                               rome_straightforward(lm, prompt, f.subject, new, layer, short, contexts,
                                                    mom2).v_star))
        enc = encode(lm, prompt)
        new_id, old_id = first_token(lm, new), first_token(lm, f.object)
        p0 = next_token_probs(lm, enc)
        with applied(lm, [res.edit]):
            p = next_token_probs(lm, enc)
        takes = bool(p[new_id] > p[old_id])
        print(f"{prompt!r:38s} -> {new:10s} | knlab edit {fast_edit[-1]:6.3f} s (wall {fast_wall[-1]:6.3f} s, "
              f"{res.steps} steps) | straightforward {slow[-1]:6.2f} s ({ref.steps} steps) | "
              f"{slow[-1] / fast_edit[-1]:5.1f}x | max rel diff right vector {dv[-1]:.1e}, u {du[-1]:.1e}, "
              f"v* {dvs[-1]:.1e} (after {args.short_steps} steps {dshort[-1]:.1e}) | p({new}) {p0[new_id]:.3f} -> "
              f"{p[new_id]:.3f}, p({f.object}) {p0[old_id]:.3f} -> {p[old_id]:.3f}: "
              f"{'takes' if takes else 'DOES NOT TAKE'}")
    # the noise floor: the straightforward loop against itself with its template losses summed in
    # another order (same maths, different float rounding), full run, first fact
    f = facts[0]
    prompt = F.causal_prompt(rel.train_templates[0], f.subject)
    a = first_ref
    b = rome_straightforward(lm, prompt, f.subject, facts[1].object, layer, params,
                             contexts[:1] + contexts[1:][::-1], mom2)
    print(f"noise floor ({prompt!r}): straightforward vs itself with the templates in reverse order: "
          f"max rel diff right vector {rel_diff(a.v, b.v):.1e}, v* {rel_diff(a.v_star, b.v_star):.1e} "
          f"(Adam divides each gradient component by its running size, so float rounding grows step by step)")
    n = len(slow)
    fe, fw, s = sum(fast_edit) / n, sum(fast_wall) / n, sum(slow) / n
    print(f"mean over {n} facts: knlab edit {fe:.3f} s (wall {fw:.3f} s), straightforward {s:.2f} s, "
          f"speed-up {s / fe:.1f}x (wall {s / fw:.1f}x); max rel diff right vector {max(dv):.1e}, "
          f"u {max(du):.1e}, v* {max(dvs):.1e} ({args.short_steps}-step runs: v* {max(dshort):.1e})")
    print(f"README: ROME edit on {lm.spec}: {fe:.2f} s (knlab) vs {s:.1f} s (straightforward), {s / fe:.0f}x; "
          f"covariance once: {t_mom2:.1f} s" + ("" if measured else " (from the disk cache; run with KNLAB_CACHE "
                                                "pointing at an empty folder to time its measurement)"))
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
