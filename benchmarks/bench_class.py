"""A class of 30 on one CPU Space: the students follow the Lesson while a few others edit the real model.

The app starts as a Space starts it (``python app.py``, hosted mode, the real model the default), and warms its
result cache in the background (``KNLAB_WARM``); the class arrives once /status says the warm-up is done
(``--no-wait-warm``: at once, the first students then compute and the others coalesce behind them).

* ``--students`` (30) pages (``benchmarks/browser.py``: what a browser's page sends over HTTP, one Gradio
  session each) open within ``--arrive`` (3) seconds of each other: the HTML with its config (timed on its own row),
  then, like a browser, every load event of the page at once (the Lesson's and every tab's examples, the token
  previews; timed as a row too). When every page is open, each student reads step 1 for ``--pause`` seconds and
  presses the steps' buttons in order (``/lesson_1`` ... ``/lesson_N``), with ``--pause`` (2-5) seconds between
  clicks. A click is timed from its ``queue/join`` to its answer; the column "of which queued" is how long it
  waited in the server's queue before it started. Every student must get the same answer for a step as every
  other student (the base model, no edits: anything else is an isolation violation). Like a browser, a student
  does not download a step's take-away files (its JSON, CSV and script) unless asked.
* At the same time ``--editors`` (4) others each make their own ROME edits of smollm2-135m (``/edit``), one after
  the other, ``--edits-each`` (2) unique edits each, resetting between them; after each edit a ``/predict`` of
  their own fact must answer their new target or the old answer (ROME does not always take) and never another
  editor's target.
* At the end, /status: the base weights of every model unchanged, the cache's memory and hit rate.

The straightforward way, measured in the same run: each step's answer computed for its request. The cache says
how long each step took to compute when it was computed (``Served.note``, in the step's status line), so the
ratio of that to the served p95 is the cache's worth, from the same server on the same machine.

    python benchmarks/bench_class.py [--students 30] [--editors 4] [--edits-each 2] [--url URL]
                                     [--markdown docs/benchmarks.md]

Targets (issue 32): p95 of every lesson step <= 2 s; 0 errors; 0 isolation violations; base weights unchanged.
Exit status 1 when any is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import sections  # noqa: E402
from bench_load import SMOL_PAIRS, Stats, _ms, percentile, start_app, stop_app  # noqa: E402
from browser import Page  # noqa: E402

MODEL = "smollm2-135m"
PROMPT = "The capital of {} is"
STEP_TARGET = 2.0  # seconds, p95 of every lesson step
COMPUTED = re.compile(r"computed on .*? in ([0-9.]+) s")


@dataclass
class Class(Stats):
    """bench_load's figures (latency per request, errors, isolation violations), and each step's answers."""

    computed: dict[str, float] = field(default_factory=dict)  # step -> seconds its answer took to compute
    answers: dict[str, str] = field(default_factory=dict)  # step -> the first answer given (every student's must equal it)
    queued: dict[str, list[float]] = field(default_factory=dict)  # what -> seconds each request waited in the queue
    shown_at_open: list[int] = field(default_factory=list)  # each page: how many of its load events showed something

    def same_answer(self, step: str, answer: str, who: str) -> None:
        with self.lock:
            first = self.answers.setdefault(step, answer)
        if answer != first:
            self.violation(f"{who}: {step} answered differently from the first student's")


def call(stats: Class, page: Page, what: str, endpoint: str, *args) -> list | None:
    """A click's outputs, timed from its ``queue/join`` to its answer (and how long it queued), or None (an error)."""
    try:
        answer = page.click(endpoint, *args)
    except Exception as e:
        stats.error(f"{what} {endpoint}: {type(e).__name__}: {str(e)[:300]}")
        return None
    stats.ok(what, answer.seconds)
    with stats.lock:
        stats.queued.setdefault(what, []).append(answer.queued)
    return answer.data


def connect(who: str, url: str, stats: Class, rng: random.Random, arrive: float) -> Page | None:
    """A page opened within ``arrive`` seconds of the others': its HTML and config (timed), then its load events
    (timed on their own row: the Lesson's and every tab's examples, the token previews)."""
    time.sleep(rng.uniform(0, arrive))
    try:
        page = Page(url, load_events=False)
        stats.ok("open the page (its HTML and config)", page.opened_in)
        answers = page.load()
        stats.ok("the page's load events (all)", page.loaded_in)
        with stats.lock:
            stats.shown_at_open.append(sum(map(Page.shown, answers)))
    except Exception as e:
        stats.error(f"{who}: open the page: {type(e).__name__}: {e}")
        return None
    return page


def student(i: int, url: str, steps: int, stats: Class, pause: tuple[float, float], arrive: float,
            everyone_in: threading.Barrier) -> None:
    rng = random.Random(i)
    client = connect(f"student {i}", url, stats, rng, arrive)
    everyone_in.wait()  # the class starts when every page is open
    if client is None:
        return
    try:
        follow(i, client, steps, stats, pause, rng)
    finally:
        client.close()


def follow(i: int, client: Page, steps: int, stats: Class, pause: tuple[float, float], rng: random.Random) -> None:
    time.sleep(rng.uniform(*pause))  # reads step 1 before pressing it
    for n in range(1, steps + 1):
        step = f"lesson step {n}"
        out = call(stats, client, step, f"/lesson_{n}")
        if out is not None:
            status, _plot, raw = out[0], out[1], out[2]
            if raw.get("step") != n:
                stats.violation(f"student {i}: /lesson_{n} answered step {raw.get('step')}")
            stats.same_answer(step, f"{raw.get('summary')}|{raw.get('agrees')}", f"student {i}")
            found = COMPUTED.search(status or "")
            if found:
                with stats.lock:
                    stats.computed.setdefault(step, float(found.group(1)))
        time.sleep(rng.uniform(*pause))


def editor(i: int, url: str, edits: list[tuple[str, str, str]], targets: dict[str, int], stats: Class,
           arrive: float, everyone_in: threading.Barrier) -> None:
    """``edits``: (country, true capital, new capital) made one after the other, reset between them."""
    client = connect(f"editor {i}", url, stats, random.Random(1000 + i), arrive)
    everyone_in.wait()
    if client is None:
        return
    try:
        make_edits(i, client, edits, targets, stats)
    finally:
        client.close()


def make_edits(i: int, client: Page, edits: list[tuple[str, str, str]], targets: dict[str, int], stats: Class) -> None:
    for country, true, target in edits:
        prompt = PROMPT.format(country)
        out = call(stats, client, "/edit (unique edits)", "/edit", MODEL, "rome", prompt, country, target, None,
                   "dai", "first-token")
        if out is None:
            continue
        report = out[6]
        if report.get("new") != target or len(report.get("history", [])) != 1:
            stats.violation(f"editor {i}: /edit answered new={report.get('new')!r} history={report.get('history')!r}")
        got = call(stats, client, "/predict (editors)", "/predict", MODEL, prompt, 3)
        if got is not None:
            top = got[1]["top"][0]["token"].strip()
            if top in targets and targets[top] != i:
                stats.violation(f"editor {i}: {prompt!r} -> {top!r}, editor {targets[top]}'s new capital (leak)")
            elif top not in (target, true):
                stats.violation(f"editor {i}: {prompt!r} -> {top!r} after its edit (expected {target!r} or {true!r})")
        if call(stats, client, "/reset", "/reset") is None:
            stats.violation(f"editor {i}: /reset failed")


def editor_plans(editors: int, each: int) -> tuple[list[list[tuple[str, str, str]]], dict[str, int]]:
    """Each editor's own country and ``each`` new capitals no other editor uses."""
    from knlab.world import facts as F
    rel = F.relation("P36")
    pool = [t for _, t in SMOL_PAIRS]
    plans, targets = [], {}
    for i in range(editors):
        country = SMOL_PAIRS[i][0]
        mine = [pool[(i + k * editors) % len(pool)] for k in range(each)]
        plans.append([(country, rel.fact(country).object, t) for t in mine])
        targets.update({t: i for t in mine})
    return plans, targets


def server_status(url: str) -> tuple[dict, int]:
    """/status, and how many load events a page of the app runs as it opens."""
    page = Page(url, load_events=False)
    try:
        return page.click("/status").data[0], len(page.load_dependencies())
    finally:
        page.close()


def wait_for_warm(url: str, timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not server_status(url)[0].get("warming"):
            return time.time() - t0
        time.sleep(2)
    raise RuntimeError(f"the app was still warming after {timeout:.0f} s")


def run_class(url: str, students: int, editors: int, edits_each: int, pause: tuple[float, float],
              arrive: float) -> dict:
    from knlab.studies.lesson import STEPS
    stats = Class()
    plans, targets = editor_plans(editors, edits_each)
    everyone_in = threading.Barrier(students + editors)
    threads = [threading.Thread(target=student, args=(i, url, len(STEPS), stats, pause, arrive, everyone_in),
                                daemon=True) for i in range(students)]
    threads += [threading.Thread(target=editor, args=(i, url, plans[i], targets, stats, arrive, everyone_in),
                                 daemon=True) for i in range(editors)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(3600)
    wall = time.time() - t0
    status, load_events = server_status(url)
    return {"url": url, "students": students, "editors": editors, "edits_each": edits_each, "steps": len(STEPS),
            "wall": wall, "errors": stats.errors, "violations": stats.violations,
            "latency": {w: {"n": len(v), "p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "max": max(v),
                            "queued p95": percentile(stats.queued[w], 0.95) if stats.queued.get(w) else None}
                        for w, v in sorted(stats.latency.items())},
            "computed": stats.computed, "shown_at_open": sorted(stats.shown_at_open), "cache": status.get("cache") or {}, "rendered": status.get("rendered") or {},
            "unchanged": bool(status["models"]) and all(m["unchanged"] for m in status["models"].values()),
            "stuck": [t.name for t in threads if t.is_alive()],
            "load_events": load_events}


def steps_ok(res: dict) -> bool:
    return all(l["p95"] <= STEP_TARGET for w, l in res["latency"].items() if w.startswith("lesson"))


def cpu_flags() -> str:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512"


def rows(res: dict) -> list[list]:
    out = []
    for w, l in res["latency"].items():
        computed = res["computed"].get(w)
        ratio = f"{computed / l['p95']:.1f}x" if computed else "-"
        queued = _ms(l["queued p95"]) if l.get("queued p95") is not None else "-"
        out.append([w, l["n"], _ms(l["p50"]), _ms(l["p95"]), _ms(l["max"]), queued,
                    f"{computed:.1f} s" if computed else "-", ratio])
    return out


HEADER = ["request", "n", "p50", "p95", "max", "of which queued, p95", "computed once in", "computed / served p95"]


def report(res: dict) -> str:
    lines = [f"{res['students']} students x {res['steps']} lesson steps, {res['editors']} editors x {res['edits_each']} "
             f"ROME edits of {MODEL}, against {res['url']}: wall {res['wall']:.0f} s (os.cpu_count() "
             f"{os.cpu_count()}; CPU flags: {cpu_flags()})",
             f"errors: {len(res['errors'])}"] + [f"  {e}" for e in res["errors"][:5]]
    lines += [f"isolation violations: {len(res['violations'])}"] + [f"  {v}" for v in res["violations"][:5]]
    lines.append("  ".join(f"{h:>14}" for h in HEADER))
    lines += ["  ".join(f"{str(x):>14}" for x in r) for r in rows(res)]
    lines.append(f"cache: {cache_line(res)}")
    lines.append(f"page opens: {opened_line(res)}")
    lines.append(f"base weights {'unchanged' if res['unchanged'] else 'CHANGED'} at the end; every lesson step's p95 "
                 f"<= {STEP_TARGET:g} s: {steps_ok(res)}")
    return "\n".join(lines)


def cache_line(res: dict) -> str:
    """The cache's size and hit rate, counting the requests answered with kept outputs (``Context.reused``) as the
    hits they are (they never reach the cache)."""
    c, r = res["cache"], res["rendered"]
    hits, computed = c.get("hits", 0) + c.get("coalesced", 0) + r.get("reused", 0), c.get("misses", 0)
    rate = hits / (hits + computed) if hits + computed else 0.0
    return (f"{c.get('entries')} entries, {c.get('memory_bytes', 0) / 2**20:.1f} MB in memory; hit rate "
            f"{100 * rate:.1f}% ({hits} served without computing: {c.get('hits')} from the cache, {c.get('coalesced')} "
            f"coalesced, {r.get('reused', 0)} with kept outputs; {computed} computed, warm-up included)")


def opened_line(res: dict) -> str:
    """How many of each page's load events (the examples, the token previews) showed something as it opened."""
    shown = res["shown_at_open"]
    if not shown:
        return "no page opened"
    return f"{shown[0]}-{shown[-1]} of {res['load_events']} load events showed something ({len(shown)} pages)"


def markdown(res: dict, warm: float | None) -> str:
    warmed = f"the app's background warm-up took {warm:.0f} s after start; " if warm is not None else ""
    return (f"{res['students']} students follow the Lesson ({res['steps']} steps, 2-5 s between clicks) while "
            f"{res['editors']} others make {res['editors'] * res['edits_each']} unique ROME edits of {MODEL}, over "
            f"HTTP against `python app.py` in hosted mode ({warmed}CPU flags: {cpu_flags()}, {os.cpu_count()} "
            f"cores): **{len(res['errors'])} errors, {len(res['violations'])} isolation violations**, base weights "
            f"{'unchanged' if res['unchanged'] else 'CHANGED'} at the end; every lesson step's p95 <= "
            f"{STEP_TARGET:g} s: **{steps_ok(res)}**. Cache: {cache_line(res)}. Page opens: {opened_line(res)}.\n\n"
            + sections.table(HEADER, rows(res)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--editors", type=int, default=4)
    ap.add_argument("--edits-each", type=int, default=2)
    ap.add_argument("--pause", type=float, nargs=2, default=(2.0, 5.0), help="seconds between a student's clicks")
    ap.add_argument("--arrive", type=float, default=3.0, help="students open the Lesson within this many seconds")
    ap.add_argument("--url", default=None, help="an already-running app (default: start python app.py, hosted)")
    ap.add_argument("--no-wait-warm", action="store_true", help="start the class without waiting for the warm-up")
    ap.add_argument("--warm-timeout", type=float, default=1800)
    sections.add_argument(ap)
    args = ap.parse_args(argv)
    proc, url, warm = None, args.url, None
    if url is None:  # a fresh Space (start_app keeps no result on disk: the editors' edits must compute)
        os.environ.update({"KNLAB_HOSTED": "1", "KNLAB_DEFAULT_MODEL": MODEL})
        log = os.path.join(tempfile.mkdtemp(prefix="knlab-class-"), "app.log")
        proc, url = start_app(log)
        print(f"app started (log {log})", flush=True)
    try:
        if not args.no_wait_warm:
            warm = wait_for_warm(url, args.warm_timeout)
            print(f"warm after {warm:.0f} s", flush=True)
        res = run_class(url, args.students, args.editors, args.edits_each, tuple(args.pause), args.arrive)
        print(report(res), flush=True)
    finally:
        if proc is not None:
            stop_app(proc)
    if args.markdown:
        sections.write_section(args.markdown, sections.section_name(__file__), markdown(res, warm),
                               command=sections.command_line(None if argv is None else [__file__, *argv]))
    ok = not res["errors"] and not res["violations"] and res["unchanged"] and steps_ok(res) and not res["stuck"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
