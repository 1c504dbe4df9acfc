"""Causal tracing (Meng et al. 2022): corrupt the subject's embeddings with noise, restore clean states.

The core is ``restored_probs``: for any list of *restore configurations* (each a set of (kind, layer,
token) cells whose clean output is put back into the corrupted run) it returns p(answer) averaged over
the noise samples. All configurations and samples run as one batch, with the same noise for every
configuration, so grids are comparable cell to cell. The noise itself (its scale, its draws) is
``corruption``'s; what one grid cell restores is ``grid_cells``, shared with the preview (``patching``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.limits import check_count
from knlab.core.models import LM
from knlab.core.nethook import Trace, TraceDict
from knlab.core.replay import prefix_kwargs, prefix_reusable, replay_blocks, returned_cache
from knlab.core.tokens import first_token, model_text
from knlab.methods.corruption import CORRUPTIONS, SubjectCorruption, noise_level, parse_noise, replacement_ids
from knlab.methods.predict import encode, next_token_probs

Cell = tuple[str, int, int]  # (kind: "hidden" | "mlp" | "attn", layer, token)


def locate_subject(lm: LM, prompt: str, subject: str, occurrence: int = -1) -> tuple[int, int]:
    """Token range [start, end) of ``subject`` in the tokenized prompt, from its character span.

    ``occurrence`` picks among repeated mentions (default: the last one, nearest the prediction)."""
    if not isinstance(subject, str) or not subject.strip():
        raise InputError("the subject is empty")
    subject = subject.strip()
    prompt = model_text(lm, prompt)  # the text the model reads (RoBERTa's <mask> for [MASK])
    starts, i = [], prompt.find(subject)
    while i >= 0:
        starts.append(i)
        i = prompt.find(subject, i + 1)
    if not starts:
        raise InputError(f"the subject {subject!r} is not in the prompt {prompt!r}")
    try:
        a = starts[occurrence]
    except IndexError:
        raise InputError(f"the subject occurs {len(starts)} times; occurrence {occurrence} does not exist") from None
    b = a + len(subject)
    enc = lm.tokenizer(prompt, return_offsets_mapping=True)
    toks = [t for t, (s, e) in enumerate(enc["offset_mapping"]) if e > s and s < b and e > a]
    if not toks:
        raise InputError(f"the subject {subject!r} covers no token of the prompt")
    return toks[0], toks[-1] + 1


def module_name(lm: LM, kind: str, layer: int) -> str:
    if kind == "hidden":
        return lm.arch.layer(layer)
    if kind in ("mlp", "attn"):
        return lm.arch.module(kind, layer)
    raise InputError(f"unknown state kind {kind!r} (hidden, mlp, attn)")


METRICS = ("prob", "logit_diff")


@dataclass
class Restored:
    """The metric (p(answer), or the logit difference) in the clean run, the corrupted run and each
    restored configuration."""

    clean: float  # in the clean run
    corrupted: float  # with the subject corrupted, nothing restored
    probs: np.ndarray  # [n_configs] with each configuration restored
    foil_id: int | None = None  # logit_diff: the corrupted run's answer, whose logit is subtracted


def cannot_change(cell: Cell, subject_start: int, position: int, n_layers: int, masked: bool) -> bool:
    """Whether restoring ``cell`` cannot change p(answer): its clean state equals the corrupted one, or
    nothing downstream reads it. Such cells are not computed (their value is the corrupted p), by the
    exact trace and by its first-order preview alike."""
    _k, l, t = cell
    if not masked and t < subject_start:  # a causal model's tokens before the subject never see the noise
        return True
    return l == n_layers - 1 and t != position  # last layer: only the prediction position is read


def rows_per_batch(samples: int, positions: int, max_batch: int = 512) -> int:
    """Rows of one forward pass. A no-grad forward frees a block's tensors once the next block has its
    output, so its peak memory is about one block's activations, proportional to rows x positions (the
    attention scores, rows x heads x positions x prompt length, grow the same way in rows). The budget
    is therefore in row-positions: ``max_batch`` rows of an 8-token prompt, and proportionally fewer
    rows the more positions each runs (a configuration that continues late in the prompt runs fewer);
    never fewer than one configuration's ``samples`` rows, so that a long prompt still makes progress."""
    return max(samples, (max_batch * 8) // max(8, positions))


@dataclass
class _Planned:
    """The configurations that must run, grouped by the first position they can change (the cache of
    the corrupted run covers everything before it), each with the first block that must run for it."""

    groups: dict[int, list[tuple[int, int]]]  # first changed position -> [(start block, configuration)]
    same_as: dict[int, int]  # configuration -> an identical earlier one (once no-op cells are gone)


def _plan(configs: list[list[Cell]], n_layers: int, reuse_prefix: bool) -> _Planned:
    groups: dict[int, list[tuple[int, int]]] = {}
    same_as: dict[int, int] = {}
    seen: dict[tuple, int] = {}
    for i, cfg in enumerate(configs):
        if not cfg:
            continue  # nothing to restore: p(answer) is the corrupted run's
        key = tuple(sorted(cfg))
        if key in seen:
            same_as[i] = seen[key]
            continue
        seen[key] = i
        # a restored hidden state is block l's output, so block l + 1 is the first to see it; a restored
        # MLP or attention output is inside block l
        start = min(l + 1 if k == "hidden" else l for k, l, _ in cfg)
        # positions before the first restored token are exactly the corrupted run's (causal attention)
        first = min(t for _k, _l, t in cfg) if reuse_prefix else 0
        groups.setdefault(first, []).append((min(start, n_layers), i))
    return _Planned(groups, same_as)


def restored_probs(lm: LM, prompt: str, subject_range: tuple[int, int], answer_id: int,
                   configs: Sequence[Iterable[Cell]], samples: int = 10, noise: float | None = None,
                   seed: int = 0, max_batch: int = 512, progress=None,
                   use_prefix_cache: bool = True, corruption: SubjectCorruption | None = None,
                   metric: str = "prob") -> Restored:
    """``_restored_probs`` in the trace's compute dtype (``LM.compute_dtype("trace")``; float32: no
    context at all). ``corruption``: Gaussian noise at ``noise`` (``samples`` draws from ``seed``) unless
    given (``SubjectCorruption.replacement``: one run with another subject's tokens). ``metric``:
    "prob", p(answer); or "logit_diff", the answer's logit minus the corrupted run's answer's (its most
    probable token other than the clean answer), Zhang & Nanda's logit difference."""
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r} ({', '.join(METRICS)})")
    with torch.no_grad(), lm.autocast("trace"):
        return _restored_probs(lm, prompt, subject_range, answer_id, configs, samples, noise, seed, max_batch,
                               progress, use_prefix_cache, corruption, metric)


def _restored_probs(lm: LM, prompt: str, subject_range: tuple[int, int], answer_id: int,
                    configs: Sequence[Iterable[Cell]], samples: int, noise: float | None,
                    seed: int, max_batch: int, progress, use_prefix_cache: bool,
                    corruption: SubjectCorruption | None, metric: str) -> Restored:
    """p(answer) for each restore configuration, averaged over ``samples`` noise draws.

    Four things make this fast without changing a number: configurations run batched (rows =
    configuration x sample) with the same noise; cells that cannot matter are skipped; blocks below a
    configuration's first restored module are not recomputed, since there they are exactly the
    corrupted run's, which is computed once and replayed; and for a causal model, positions before
    the first restored token are not recomputed either: their keys and values come from the
    corrupted run's cache."""
    enc = encode(lm, prompt)
    ids, pos = enc.input_ids, enc.position
    T, L = ids.shape[1], lm.n_layers
    s0, s1 = subject_range
    if not (0 <= s0 < s1 <= T):
        raise InputError(f"subject range {subject_range} is outside the prompt's {T} tokens")
    if corruption is None:
        level = noise_level(lm) if noise is None else float(noise)
        corruption = SubjectCorruption.noise(lm, samples, (s0, s1), level, seed)
    samples = corruption.samples
    configs = [[c for c in cfg if not cannot_change(c, s0, pos, L, lm.masked)] for cfg in configs]
    modules = sorted({module_name(lm, k, l) for c in configs for k, l, _ in c})
    blocks = [lm.arch.layer(l) for l in range(L)]

    def corrupt(x, _name, rows=None, offset=0):
        """The subject corrupted in the embeddings of positions offset.. (rows: which samples)."""
        return corruption.apply(x, rows, offset)

    foil = [None]  # logit_diff: the corrupted run's answer, known once that run is made

    def score(logits_at_pos: torch.Tensor) -> torch.Tensor:
        """The metric of each row's logits at the prediction position."""
        z = logits_at_pos.float()
        if metric == "logit_diff":
            return z[:, answer_id] - z[:, foil[0]]
        return torch.softmax(z, -1)[:, answer_id]

    # step 1, the clean run: its logits and every state we may restore
    with TraceDict(lm.model, modules) as td:
        clean_logits = lm.model(input_ids=ids, use_cache=False).logits[:, pos]
    clean = {m: td[m].output[0] for m in modules}  # [T, d]

    # step 2, the corrupted run, one row per sample: p(answer), every block's output (for replay) and,
    # for a causal model, the keys and values (for positions before a restored token)
    with Trace(lm.model, lm.arch.embed, retain_output=False, edit_output=corrupt), \
            TraceDict(lm.model, blocks) as corrupted_blocks:
        res = lm.model(input_ids=ids.expand(samples, T), use_cache=not lm.masked)
    corrupted_probs = torch.softmax(res.logits[:, pos].float(), -1).mean(0)
    corrupted_probs[answer_id] = -1.0
    foil[0] = int(corrupted_probs.argmax())
    clean_p = score(clean_logits).item()
    corrupted_p = score(res.logits[:, pos]).mean().item()
    cache = returned_cache(res) if use_prefix_cache and prefix_reusable(lm, T) else None

    # step 3, the plan: which configurations run, from which position and block
    plan = _plan(configs, L, reuse_prefix=cache is not None and not lm.masked)
    out = np.full(len(configs), corrupted_p)
    batches = []
    for first, members in sorted(plan.groups.items()):
        per = rows_per_batch(samples, T - first, max_batch)
        # rows ordered by start block: block j runs only the rows that start at or below it, a prefix
        rows = [(start, c, s) for start, c in sorted(members) for s in range(samples)]
        batches += [(first, rows[j : j + per]) for j in range(0, len(rows), per)]
        for _start, c in members:
            out[c] = 0.0  # the batches add up its samples' mean

    # step 4, each batch: corrupted embeddings, replayed blocks below each row's start, clean states
    # written where its configuration restores them, positions from `first` on
    for n, (first, batch) in enumerate(batches):
        B, width = len(batch), T - first
        starts = [start for start, _c, _s in batch]
        sample_idx = torch.tensor([s for _st, _c, s in batch], device=lm.device)
        masks = {m: torch.zeros(B, width, dtype=torch.bool, device=lm.device) for m in modules}
        for r, (_st, c, _s) in enumerate(batch):
            for k, l, t in configs[c]:
                masks[module_name(lm, k, l)][r, t - first] = True
        used = sorted({module_name(lm, k, l) for _st, c, _s in batch for k, l, _t in configs[c]})

        def restore(x, name):  # x: the rows this module ran (a prefix of the batch)
            return torch.where(masks[name][: x.shape[0], :, None], clean[name][None, first:].to(x.dtype), x)

        kwargs = prefix_kwargs(lm, cache, first, T, sample_idx, starts)
        with contextlib.ExitStack() as stack:
            if starts[0] == 0:
                stack.enter_context(Trace(lm.model, lm.arch.embed, retain_output=False,
                                          edit_output=lambda x, nm: corrupt(x, nm, sample_idx, first)))
            stack.enter_context(replay_blocks(lm, corrupted_blocks, starts, sample_idx, first))
            for m in used:
                stack.enter_context(Trace(lm.model, m, retain_output=False, edit_output=restore))
            logits = lm.model(input_ids=ids[:, first:].expand(B, width), **kwargs).logits
        p = score(logits[:, pos - first]).cpu().numpy()
        for r, (_st, c, _s) in enumerate(batch):
            out[c] += p[r] / samples
        if progress:
            progress((n + 1) / len(batches))
    for i, j in plan.same_as.items():
        out[i] = out[j]
    return Restored(clean_p, float(corrupted_p), out, foil[0] if metric == "logit_diff" else None)


def restore_last_subject_token(lm: LM, prompt: str, subject: str, answer_id: int, samples: int = 10,
                               noise: float | None = None, seed: int = 0) -> tuple[Restored, tuple[int, int]]:
    """p(answer) when only the last subject token's clean hidden state is restored, at each layer."""
    rng = locate_subject(lm, prompt, subject)
    t = rng[1] - 1
    configs = [[("hidden", l, t)] for l in range(lm.n_layers)]
    return restored_probs(lm, prompt, rng, answer_id, configs, samples, noise, seed), rng


KINDS = ("hidden", "mlp", "attn")


def default_window(n_layers: int) -> int:
    """The published window (10 layers on GPT-2 XL's 48) as the same fifth of this model's depth: 6 on a
    30-layer model, 1 on a 6-layer organism. Ten layers of six would restore the whole network in every
    cell and show no layer structure at all."""
    return max(1, min(10, round(n_layers / 5)))


def restore_window(layer: int, window: int, n_layers: int) -> list[int]:
    """The layers whose MLP / attention outputs are restored for grid cell ``layer`` (centred window)."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


def grid_cells(kind: str, token: int, layer: int, window: int, n_layers: int) -> list[Cell]:
    """What grid cell (``token``, ``layer``) of ``kind`` restores: the hidden state itself (one cell), or
    the MLP / attention outputs of the ``window`` layers around ``layer`` at that token. A single module
    output rarely carries a fact alone, so Meng et al. restore a window of them; a hidden state is the
    residual stream, which already sums every earlier module."""
    if kind == "hidden":
        return [(kind, layer, token)]
    return [(kind, j, token) for j in restore_window(layer, window, n_layers)]


@dataclass
class TraceResult:
    """Three token x layer grids of the metric with the restored state, plus the reference points. The
    metric is p(answer), or with ``metric="logit_diff"`` the answer's logit minus that of ``foil``, the
    corrupted run's answer; the corruption Gaussian noise, or with ``corruption="replace"`` the subject
    swapped for ``replacement`` (one run: ``samples`` is 1, ``noise`` 0)."""

    model: str
    prompt: str
    tokens: list[str]
    subject_range: tuple[int, int]
    answer: str
    answer_id: int
    position: int
    clean: float
    corrupted: float
    grids: dict[str, np.ndarray]  # kind -> [tokens, layers]
    samples: int
    window: int
    noise: float
    seed: int
    dtype: str = "float32"  # the compute dtype it ran in (LM.compute_dtype("trace"))
    corruption: str = "noise"
    replacement: str | None = None
    metric: str = "prob"
    foil: str | None = None  # logit_diff: the corrupted run's answer
    device: str = "cpu"  # where it ran

    def indirect_effect(self, kind: str) -> np.ndarray:
        return self.grids[kind] - self.corrupted

    def to_json(self) -> dict:
        out = {"model": self.model, "prompt": self.prompt, "tokens": self.tokens,
               "subject_range": list(self.subject_range), "answer": self.answer,
               "clean": self.clean, "corrupted": self.corrupted}
        for k in KINDS:
            if k in self.grids:
                out[k] = self.grids[k].tolist()
        out.update(samples=self.samples, window=self.window, noise=self.noise, seed=self.seed, dtype=self.dtype,
                   corruption=self.corruption, replacement=self.replacement, metric=self.metric, foil=self.foil,
                   device=self.device)
        return out


def answer_for(lm: LM, prompt: str, answer: str | None) -> tuple[str, int]:
    """The answer token: the one given (a word the model says in several pieces: its first piece, which is
    what the prediction position decides), or the model's clean top prediction."""
    if answer is not None and str(answer).strip():
        i = first_token(lm, str(answer))
        if i is None:
            raise InputError(f"{str(answer).strip()!r} is not something {lm.spec} can say (not in its vocabulary)")
        return lm.tokenizer.decode([i]).strip(), i
    probs = next_token_probs(lm, encode(lm, prompt))
    i = int(probs.argmax())
    return lm.tokenizer.decode([i]).strip(), i


def _check_params(samples: int, window: int | None, n_layers: int) -> int:
    check_count(samples, "trace_samples", "samples")
    if window is None:
        return default_window(n_layers)
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= max(1, 2 * n_layers):
        raise InputError(f"window must be a whole number from 1 to {max(1, 2 * n_layers)}")
    return window


@dataclass
class TraceSetup:
    """What a trace and its first-order preview (``patching``) both check and resolve before running."""

    kinds: tuple[str, ...]
    window: int
    noise: float
    enc: object  # predict.Encoded
    subject_range: tuple[int, int]
    answer: str
    answer_id: int
    replacement: list[int] | None = None  # corruption "replace": the replacement subject's token ids


def prepare(lm: LM, prompt: str, subject: str, answer: str | None, samples: int, window: int | None,
            noise: float | str | None, kinds: Iterable[str], corruption: str = "noise",
            replacement: str | None = None, metric: str = "prob") -> TraceSetup:
    kinds = tuple(kinds)
    for k in kinds:
        module_name(lm, k, 0)
    if corruption not in CORRUPTIONS:
        raise InputError(f"unknown corruption {corruption!r} ({', '.join(CORRUPTIONS)})")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r} ({', '.join(METRICS)})")
    window = _check_params(samples, window, lm.n_layers)
    level = parse_noise(lm, noise) if corruption == "noise" else 0.0
    enc = encode(lm, prompt)
    rng = locate_subject(lm, prompt, subject)
    ids = replacement_ids(lm, prompt, subject, rng, replacement) if corruption == "replace" else None
    ans, aid = answer_for(lm, prompt, answer)
    return TraceSetup(kinds, window, level, enc, rng, ans, aid, ids)


def trace(lm: LM, prompt: str, subject: str, answer: str | None = None, samples: int = 10, window: int | None = None,
          noise: float | str | None = None, seed: int = 0, kinds: Iterable[str] = KINDS,
          progress=None, corruption: str = "noise", replacement: str | None = None,
          metric: str = "prob") -> TraceResult:
    """Meng et al.'s causal trace of ``prompt``: for every (token, layer) and kind, p(answer) after
    restoring that clean state (hidden) or a window of clean module outputs (mlp, attn); ``window=None``:
    ``default_window`` of the model's depth. Zhang & Nanda's choices: ``corruption="replace"`` corrupts
    by swapping the subject for ``replacement`` (same token length) instead of adding noise, and
    ``metric="logit_diff"`` measures the answer's logit minus the corrupted run's answer's."""
    st = prepare(lm, prompt, subject, answer, samples, window, noise, kinds, corruption, replacement, metric)
    kinds, window, level, enc, rng, ans, aid = (st.kinds, st.window, st.noise, st.enc, st.subject_range,
                                                st.answer, st.answer_id)
    T, L = enc.input_ids.shape[1], lm.n_layers
    configs: list[list[Cell]] = []
    index: list[tuple[str, int, int]] = []
    for k in kinds:
        for t in range(T):
            for l in range(L):
                configs.append(grid_cells(k, t, l, window, L))
                index.append((k, t, l))
    swap = SubjectCorruption.replacement(lm, st.replacement, rng) if st.replacement is not None else None
    res = restored_probs(lm, prompt, rng, aid, configs, samples, level, seed, progress=progress,
                         corruption=swap, metric=metric)
    grids = {k: np.zeros((T, L)) for k in kinds}
    for (k, t, l), p in zip(index, res.probs):
        grids[k][t, l] = p
    foil = lm.tokenizer.decode([res.foil_id]).strip() if res.foil_id is not None else None
    return TraceResult(lm.spec, prompt.strip(), enc.tokens, rng, ans, aid, enc.position, res.clean,
                       res.corrupted, grids, samples if swap is None else 1, window, level, seed,
                       lm.compute_dtype("trace"), corruption, replacement.strip() if swap is not None else None,
                       metric, foil, device=str(lm.device))
