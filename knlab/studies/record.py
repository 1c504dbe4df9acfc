"""The record: every claim of the paper run on every shipped model it applies to, at a size that decides
(``Claim.record_size``, capped by what the model knows), kept item by item in
``assets/records/<model>.json`` and summed up in docs/results.md.

It runs for hours on the real model, so it is built to be stopped: every item's result is written to the
model's record the moment it exists (``Items``' ``on_item``), and ``resume`` hands each claim the items it
already measured, so it goes on where it stopped. Claims run side by side in ``jobs`` spawned processes,
one task per (model, claim group): several processes write one model's file, each its own claim's entry,
read-modify-written under an exclusive ``fcntl`` lock. Each entry keeps the command, the commit, the
package versions, the weights' checksum and the seconds it took, so a reader can tell what produced it;
an entry whose model weights differ from the loaded model's is not resumed but started again."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from knlab.core.errors import InputError
from knlab.core.models import ASSETS, load_model, shipped_installed, weights_checksum
from knlab.studies import published
from knlab.studies.claims.common import Items, ModelRun
from knlab.studies.findings import AGREES, DEPARTS, Finding
from knlab.studies.paper import CLAIMS, claim, pole_rank, process_groups

RECORDS = ASSETS / "records"
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results.md"
# The size below which a finding is flagged: the issue's "at least 30 items per finding on the real model
# where the model knows that many". A smaller N is what the model can be asked (the items it states or
# answers before any edit), and the claim's left-out items say why the rest could not be.
MIN_ITEMS = 30
ARRAYS = Path(os.environ.get("KNLAB_CACHE", Path.home() / ".cache" / "knlab")) / "record-arrays"
PACKAGES = ("torch", "transformers", "numpy", "tokenizers", "gguf")


def record_path(model: str, directory: Path = RECORDS) -> Path:
    return Path(directory) / f"{model}.json"


_READ: dict[Path, tuple[tuple[int, int, int], dict]] = {}  # path -> (its file's version when read, its record)


def load_record(model: str, directory: Path = RECORDS) -> dict:
    """The model's record ({"model", "claims": {id: entry}}), empty where none was written. Read-only: it
    is parsed once per version of the file (the Paper tab reads each model's record for every claim: 2 MB
    of JSON a time, 2.8 of the app's 8 s to build its page); ``_locked`` reads its own copy to change."""
    path = record_path(model, directory)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return _parsed(path, model)
    version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a write replaces the file: a new inode
    known = _READ.get(path)
    if known is None or known[0] != version:
        known = _READ[path] = (version, _parsed(path, model))
    return known[1]


def _parsed(path: Path, model: str) -> dict:
    """The record in ``path`` freshly parsed (a copy of its own), empty where none was written."""
    return json.loads(path.read_text()) if path.exists() else {"model": model, "claims": {}}


def recorded_run(entry: dict) -> ModelRun:
    """A record entry as the run it recorded (findings, rows, figure, items)."""
    run = entry["run"]
    return ModelRun(run["model"], run["rows"], [Finding.from_json(f) for f in run["findings"]], run["figure"],
                    run["size"], run["seconds"], run.get("detail", {}), run.get("items", {}), run.get("left_out", {}))


def recorded(claim_id: str, model: str, directory: Path = RECORDS) -> ModelRun | None:
    """The complete recorded run of a claim on a model, or None where the record has none (yet)."""
    entry = load_record(model, directory)["claims"].get(claim_id)
    return recorded_run(entry) if entry and entry.get("complete") else None


@contextmanager
def _locked(model: str, directory: Path) -> Iterator[dict]:
    """The model's record, read under an exclusive lock and written back when the block ends."""
    path = record_path(model, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _parsed(path, model)
        yield data
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        tmp.replace(path)


def _provenance(command: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        commit = None
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return {"command": command, "commit": commit, "versions": versions}


def ran_on(lm) -> dict:
    """Where a claim's record was measured: the device, and each method's compute dtype there."""
    from knlab.core.dtype import METHODS
    return {"device": str(lm.device), "dtypes": {m: lm.compute_dtype(m) for m in METHODS}}


def record_claim(lm, claim_id: str, directory: Path = RECORDS, resume: bool = True, command: str = "",
                 log: Callable[[str], None] = print, size: int | None = None) -> ModelRun:
    """Run one claim on a loaded model at its record size (``size``: another, for a check), checkpointing
    every item into the model's record."""
    c = claim(claim_id)
    size = size or c.record_size
    model, weights = lm.spec, weights_checksum(lm.model)
    with _locked(model, directory) as data:
        old = data["claims"].get(claim_id, {})
        done = old.get("items", {}) if resume and old.get("weights") == weights else {}
        data["claims"][claim_id] = {"claim": claim_id, "size": size, "complete": False, "weights": weights,
                                    **_provenance(command), **ran_on(lm), "seconds": old.get("seconds", 0.0) if done else 0.0,
                                    "items": done}
    t0, last = time.perf_counter(), [0.0]
    before, spent_before = len(done), (old.get("seconds", 0.0) if done else 0.0)

    def on_item(key: str, value: dict) -> None:
        with _locked(model, directory) as data:
            data["claims"][claim_id]["items"][key] = value
            data["claims"][claim_id]["seconds"] = round(spent_before + time.perf_counter() - t0, 1)

    def progress(f: float, what: str) -> None:
        now = time.perf_counter()
        if now - last[0] < 30 and f < 1:  # a line every half minute is progress enough in a log
            return
        last[0] = now
        spent = now - t0
        left = f"{spent * (1 - f) / f / 60:.0f} min left" if f > 0.02 else "time left not known yet"
        log(f"[{model} {claim_id}] {100 * f:.0f}%, {len(items.done) - before} new items, {len(items.done)} in all, "
            f"{spent / 60:.1f} min, {left}: {what}")

    items = Items(done, on_item, ARRAYS / model / claim_id)
    run = c.run(lm, size, progress, items)
    if weights_checksum(lm.model) != weights:
        raise RuntimeError(f"{model}'s weights changed during {claim_id}: an edit was not undone")
    with _locked(model, directory) as data:
        entry = data["claims"][claim_id]
        entry.update(complete=True, seconds=round(spent_before + time.perf_counter() - t0, 1),
                     run=run.to_json(), finished=time.strftime("%Y-%m-%d %H:%M"))
        entry["items"] = run.items  # this run's items, in its order: no item of an earlier, larger run
        entry["run"].pop("items")
    log(f"[{model} {claim_id}] done in {(time.perf_counter() - t0) / 60:.1f} min: {run.summary()}")
    return run


def _tasks(models: Sequence[str], claim_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(model, claims) tasks, ``paper.process_groups`` per model; the long poles first, the real model's
    first of all."""
    tasks = [(model, group) for model in models
             for group in process_groups([c for c in claim_ids if model in claim(c).applies_to()])]
    return sorted(tasks, key=lambda task: (pole_rank(task[1]), task[0] != "smollm2-135m"))


def _run_task(model: str, group: list[str], directory: str, resume: bool, command: str, threads: int) -> list[str]:
    import torch
    torch.set_num_threads(threads)
    lm = load_model(model)
    for cid in group:
        if resume and load_record(model, Path(directory))["claims"].get(cid, {}).get("complete"):
            print(f"[{model} {cid}] recorded already", flush=True)
            continue
        record_claim(lm, cid, Path(directory), resume, command, log=lambda s: print(s, flush=True))
    return group


def record(models: Sequence[str] | None = None, claim_ids: Sequence[str] | None = None, resume: bool = False,
           jobs: int = 1, directory: Path = RECORDS, command: str = "python -m knlab paper --record",
           log: Callable[[str], None] = print, results: Path | None = RESULTS, threads: int | None = None) -> None:
    """Record the claims (default: all) on the shipped models (default: every installed one), ``jobs``
    processes side by side, then write docs/results.md from the records (``results``; None: do not).
    ``threads``: torch threads per process (default: the cores shared among the jobs; pass 1 when other
    records run beside this one: more threads than cores slow every one of them down many times)."""
    claim_ids = list(claim_ids or [c.id for c in CLAIMS])
    for cid in claim_ids:
        claim(cid)
    installed = shipped_installed()
    models = list(models or installed)
    for m in models:
        if m not in installed:
            raise InputError(f"{m} is not an installed shipped model ({', '.join(installed)})")
    tasks = _tasks(models, claim_ids)
    if not tasks:
        raise InputError(f"none of {', '.join(claim_ids)} applies to {', '.join(models)}")
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(tasks))))
    names = ", ".join(f"{m}: {'+'.join(g)}" for m, g in tasks)
    log(f"recording {len(tasks)} tasks ({names}) in {jobs} "
        f"process(es), {threads} thread(s) each")
    with ProcessPoolExecutor(max(1, min(jobs, len(tasks))), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_task, m, g, str(directory), resume, command, threads): (m, g) for m, g in tasks}
        try:
            for fut in as_completed(futures):
                m, g = futures[fut]
                fut.result()
                log(f"finished {m}: {', '.join(g)}")
                if results is not None:  # the summary follows the record as it grows
                    write_results(directory, results, README if results == RESULTS else None)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


AFTER_HEADING = "After the paper: not Niu et al.'s claims"


def _cell(f: Finding) -> str:
    mark = {AGREES: "agrees", DEPARTS: "**departs**"}.get(f.outcome, "undecided")
    small = f" (N < {MIN_ITEMS})" if f.n < MIN_ITEMS else ""
    return f"{f.text()}{small}: {mark}"


def _left_out_lines(left_out: dict[str, str], shown: int = 3) -> list[str]:
    """What a claim left out, as the per-claim summary says it: how many, and the distinct reasons (the
    first few, with how many items each)."""
    if not left_out:
        return []
    reasons = Counter(left_out.values())
    top = reasons.most_common(shown)
    more = len(reasons) - len(top)
    return [f"  - left out: {len(left_out)} items; " + "; ".join(f"{n} x {why}" for why, n in top)
            + (f"; and {more} other reasons (`assets/records/`)" if more else "")]


def findings_table(directory: Path = RECORDS, models: Sequence[str] | None = None, rules: bool = True) -> list[str]:
    """The claims x findings x models table of outcomes, each cell the rate, N, interval and outcome."""
    models = list(models or recorded_models(directory))
    records = {m: load_record(m, directory)["claims"] for m in models}
    out = ["| claim | finding | " + ("the paper's rule | " if rules else "") + " | ".join(models) + " |",
           "|---|---|" + ("---|" if rules else "") + "---|" * len(models)]
    for c in CLAIMS:
        if c.by and c is next(x for x in CLAIMS if x.by):
            out.append(f"| **{AFTER_HEADING}** | | " + ("| " if rules else "") + "| " * len(models))
        if c.by and not rules:  # the README's short table: a follow-up's outcomes counted, one row
            out.append(f"| `{c.id}` ({c.source}) | its findings (docs/results.md) | "
                       + " | ".join(_counts(records[m].get(c.id), m in c.applies_to()) for m in models) + " |")
            continue
        names: dict[str, str] = {}
        for m in models:
            entry = records[m].get(c.id)
            if entry and entry.get("complete"):
                for f in entry["run"]["findings"]:
                    names.setdefault(f["name"], f["rule"])
        def absent(m: str) -> str:
            entry = records[m].get(c.id)
            if entry and not entry.get("complete"):
                return f"in progress ({len(entry.get('items', {}))} items)"
            return "not recorded yet" if m in c.applies_to() else "-"
        if not names:
            cells = [absent(m) for m in models]
            out.append(f"| `{c.id}` | - | " + ("- | " if rules else "") + " | ".join(cells) + " |")
            continue
        for name, rule in names.items():
            cells = []
            for m in models:
                entry = records[m].get(c.id)
                if not entry or not entry.get("complete"):
                    cells.append(absent(m))
                    continue
                f = next((Finding.from_json(x) for x in entry["run"]["findings"] if x["name"] == name), None)
                cells.append(_cell(f) if f else "-")
            out.append(f"| `{c.id}` ({c.source}) | {_md(name)} | " + (f"{_md(rule)} | " if rules else "")
                       + " | ".join(map(_md, cells)) + " |")
    return out


def _counts(entry: dict | None, applies: bool) -> str:
    """A claim's outcomes on one model in a few words: '2 agree, 1 depart, 0 undecided'."""
    if not entry:
        return "not recorded yet" if applies else "-"
    if not entry.get("complete"):
        return f"in progress ({len(entry.get('items', {}))} items)"
    found = [Finding.from_json(f) for f in entry["run"]["findings"]]
    return f"{sum(f.outcome == AGREES for f in found)} agree, {sum(f.outcome == DEPARTS for f in found)} depart, " \
           f"{sum(f.outcome not in (AGREES, DEPARTS) for f in found)} undecided"


def _md(text: str) -> str:
    """A table cell's text: a '|' of its own (|KN|) would end the cell."""
    return text.replace("|", "\\|")


def recorded_models(directory: Path = RECORDS) -> list[str]:
    return [m for m in ("smollm2-135m", "world-gpt", "world-bert") if record_path(m, directory).exists()]


def results_markdown(directory: Path = RECORDS, models: Sequence[str] | None = None) -> str:
    """docs/results.md from the records: the claims x findings x models table of outcomes with rates, N and
    intervals, then per claim the rule of each finding and what was left out, and the wall time per claim
    and model."""
    models = list(models or recorded_models(directory))
    records = {m: load_record(m, directory)["claims"] for m in models}
    out = ["# The paper, recorded\n",
           f"Every claim of {published.SOURCE} run on every shipped model it applies to, at a size that decides, "
           "by `python -m knlab paper --record` (`--resume` goes on where a stopped run stopped). Each statement "
           "of the paper is a finding of its own: the share (or mean) over the items measured, N, the 95% "
           "interval (Wilson for shares), and one of three outcomes from the rule beside it: *agrees* (the "
           "interval lies on the paper's side), *departs* (on the other side), *undecided* (the interval "
           "admits both). Items are what the model can be asked: facts it states before any edit, probes it "
           "answers before the edit; what was left out is listed per claim in `assets/records/<model>.json`. "
           "The methods and published figures: [paper.md](paper.md). Generated from the records; do not edit.\n"]
    out += findings_table(directory, models)
    out += ["", "## Per claim", ""]
    for c in CLAIMS:
        if c.by and c is next(x for x in CLAIMS if x.by):
            out += [f"### {AFTER_HEADING}", "", "Follow-up results on the same models with the same instruments: "
                    + "; ".join(published.FOLLOW_UPS.values()) + ". The rules are those papers' findings.", ""]
        out.append(f"**`{c.id}`** ({c.source}): {c.title}. Published: {c.published}\n")
        for m in models:
            entry = records[m].get(c.id)
            if not entry:
                continue
            if not entry.get("complete"):
                out.append(f"- *{m}*: in progress, {len(entry.get('items', {}))} items so far "
                           f"(`python -m knlab paper --record {c.id} --model {m} --resume`)")
                continue
            run = entry["run"]
            left = len(run.get("left_out", {}))
            out.append(f"- *{m}*: {len(entry.get('items', {}))} items, {left} left out, "
                       f"{entry['seconds'] / 60:.1f} min (commit {str(entry.get('commit'))[:8]})")
            out += [f"  - {f['name']}: {Finding.from_json(f).text()}, {f['outcome']} ({f['rule']})"
                    + (f"; N < {MIN_ITEMS}: the items drawn that this model could be asked (left out: below)" if f["n"] < MIN_ITEMS else "")
                    for f in run["findings"]]
            out += _left_out_lines(run.get("left_out", {}))
        out.append("")
    out += ["## Wall time per claim and model (minutes)", "",
            "| claim | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for c in CLAIMS:
        cells = []
        for m in models:
            entry = records[m].get(c.id)
            cells.append(f"{entry['seconds'] / 60:.1f}" + ("" if entry.get("complete") else " (so far)")
                         if entry else "-")
        out.append(f"| `{c.id}` | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


README = RESULTS.parents[1] / "README.md"
README_START, README_END = "<!-- the record's table: generated by paper --record -->", "<!-- end of the record's table -->"


def readme_with_table(readme: str, directory: Path = RECORDS) -> str:
    """The README with its record table (between the two markers) generated anew from the records."""
    head, rest = readme.split(README_START)
    _, tail = rest.split(README_END)
    return head + README_START + "\n" + "\n".join(findings_table(directory, rules=False)) + "\n" + README_END + tail


def write_results(directory: Path = RECORDS, path: Path = RESULTS, readme: Path | None = README) -> None:
    """docs/results.md and the README's table, from the records."""
    Path(path).write_text(results_markdown(directory))
    if readme is not None:
        readme.write_text(readme_with_table(readme.read_text(), directory))
