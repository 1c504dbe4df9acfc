"""Isolation under load: many concurrent HTTP clients, each editing its own fact, against the real app.

Every client (one ``gradio_client.Client``, so one Gradio session, in its own thread) owns one country and
one new capital for it that no other client uses. Until the deadline it loops:

* mostly ``/predict`` on "The capital of {country} is", for its own country or another client's:
  its own country must answer its new capital while its edit is active and the true capital otherwise;
  every other client's country must answer the true capital (never anyone's new capital);
* now and then it toggles its edit: ``/edit`` (ROME on its own fact; sometimes a KN edit instead) when
  none is active, ``/undo`` or ``/reset`` when one is, checking the history the server sends back;
* now and then a world-bert ``/predict`` of its own country (edits of world-gpt never apply to another
  model: always the true capital) and a ``/status`` (every loaded model's base weights unchanged).

A KN edit shifts the knowledge neurons of the whole relation, so while a client's KN edit is active every
country may answer that client's target *for that client*; it must still never answer anybody else's.
The ROME (country, target) pairs were chosen so that each edit leaves the other countries' capitals alone
on world-gpt (ROME's locality is not perfect on a 6-layer model: Afghanistan -> Muscat, for one, also
moves Algeria), so any wrong answer below is a real isolation failure, not the edit's own side effect.

Every request's client-side wall time is recorded per endpoint; exceptions are errors, wrong answers are
isolation violations.

Then, nobody waiting behind somebody else's edit (``wait_behind``): one client's short ``/predict`` (default
world-gpt) timed alone, then again and again while another client's ROME ``/edit`` (default of smollm2-135m)
runs; printed as the ratio of the two medians. ``--wait-long world-gpt`` times the same model's two lanes.

    python benchmarks/bench_load.py [--clients 8] [--seconds 60] [--url http://127.0.0.1:7860/]
                                    [--wait-long smollm2-135m] [--wait-short world-gpt] [--wait-repeats 5]
    python benchmarks/bench_load.py --seconds 0 --wait-long world-gpt   # the wait alone, in a minute

``--markdown docs/benchmarks.md`` also rewrites this run's section of the record (benchmarks/sections.py).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import sections  # noqa: E402

MODEL = "world-gpt"
PROMPT = "The capital of {} is"
FIRST_EDITS = "/edit, each client's first"  # a row of its own: a second edit queues behind all the first ones
MASKED = "The capital of {} is [MASK] ."
# (country, new capital): each ROME edit verified to move only its own country among these (world-gpt).
PAIRS = [("Albania", "Islamabad"), ("Australia", "Doha"), ("Azerbaijan", "Moscow"), ("Bahamas", "Apia"),
         ("Bahrain", "Riyadh"), ("Barbados", "Belgrade"), ("Belarus", "Freetown"), ("Belgium", "Bratislava"),
         ("Bhutan", "Honiara"), ("Brazil", "Juba"), ("Cameroon", "Khartoum"), ("China", "Bern")]
# smollm2-135m (--model): countries whose capital it knows, new capitals all one token of it. ROME's
# locality on it is not verified pair by pair: another country moving to this client's own new capital
# under its own edit is allowed there (a leak, another client's capital, never is).
SMOL_PAIRS = [("France", "Madrid"), ("Canada", "Moscow"), ("Germany", "Cairo"), ("Italy", "London"),
              ("Japan", "Lima"), ("Greece", "Oslo"), ("Austria", "Dublin"), ("Cuba", "Lisbon")]
PAIRS_BY_MODEL = {"world-gpt": PAIRS, "smollm2-135m": SMOL_PAIRS}
STRICT_LOCALITY = {"world-gpt"}


def client_facts(n: int) -> list[tuple[str, str, str]]:
    """(country, true capital, new capital) for each of ``n`` clients; new capitals all distinct."""
    from knlab.world import facts as F
    rel = F.relation("P36")
    out = [(c, rel.fact(c).object, t) for c, t in PAIRS_BY_MODEL.get(MODEL, PAIRS)[:n]]
    if n > len(out):  # more clients than verified pairs: further facts (locality not verified for these)
        used = {c for c, _, _ in out} | {t for _, _, t in out} | {o for _, o, _ in out}
        rest = [f for f in rel.facts[40:] if " " not in f.subject and f.subject not in used]
        pool = [f.object for f in reversed(rel.facts) if f.object not in used]
        for f in rest[: n - len(out)]:
            t = next(o for o in pool if o not in used and o != f.object)
            used |= {f.subject, f.object, t}
            out.append((f.subject, f.object, t))
    if len(out) < n:
        raise ValueError(f"at most {len(out)} clients")
    return out


@dataclass
class Stats:
    latency: dict[str, list[float]] = field(default_factory=dict)  # endpoint -> seconds per success
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    edits: dict[int, int] = field(default_factory=dict)  # client -> edits applied
    methods: dict[str, int] = field(default_factory=dict)  # rome / kn -> edits applied
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, endpoint: str, seconds: float) -> None:
        with self.lock:
            self.latency.setdefault(endpoint, []).append(seconds)

    def error(self, msg: str) -> None:
        with self.lock:
            self.errors.append(msg)

    def violation(self, msg: str) -> None:
        with self.lock:
            self.violations.append(msg)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


class LoadClient:
    def __init__(self, i: int, url: str, facts: list[tuple[str, str, str]], stats: Stats, deadline: float,
                 edit_every: int, kn_share: float, status_every: int, bert_share: float):
        self.i, self.url, self.facts, self.stats, self.deadline = i, url, facts, stats, deadline
        self.country, self.true, self.target = facts[i]
        self.others_targets = {t: j for j, (_, _, t) in enumerate(facts) if j != i}
        self.edit_every, self.kn_share, self.status_every, self.bert_share = edit_every, kn_share, status_every, bert_share
        self.rng = random.Random(1000 + i)
        self.active: str | None = None  # None, "rome" or "kn"
        self.known = True  # False after a failed edit/undo/reset: the next toggle resets
        self.client = None

    def call(self, endpoint: str, *args):
        t0 = time.perf_counter()
        try:
            out = self.client.predict(*args, api_name=endpoint)
        except Exception as e:
            self.stats.error(f"client {self.i} {endpoint}{args!r}: {type(e).__name__}: {str(e)[:300]}")
            return None, False
        self.stats.ok(endpoint, time.perf_counter() - t0)
        return out, True

    def where(self) -> str:
        return f"client {self.i} ({self.country} -> {self.target}, edit {'active: ' + self.active if self.active else 'inactive'})"

    def predict(self) -> None:
        if self.rng.random() < self.bert_share:  # world-gpt edits never apply to world-bert
            out, ok = self.call("/predict", "world-bert", MASKED.format(self.country), 3)
            if ok:
                got = out[1]["top"][0]["token"]
                if got != self.true:
                    self.stats.violation(f"{self.where()}: world-bert {MASKED.format(self.country)!r} -> {got!r}, "
                                         f"expected {self.true!r}")
            return
        j = self.i if self.rng.random() < 0.4 else self.rng.randrange(len(self.facts))
        country, true, target = self.facts[j]
        prompt = PROMPT.format(country)
        out, ok = self.call("/predict", MODEL, prompt, 3)
        if not ok:
            return
        got = out[1]["top"][0]["token"].strip()  # a BPE model's token carries its leading space
        if got in self.others_targets:  # somebody else's edit showed up in this session
            k = self.others_targets[got]
            self.stats.violation(f"{self.where()}: {prompt!r} -> {got!r}, client {k}'s new capital (leak)")
        elif not self.known:
            return
        elif j == self.i:
            want = self.target if self.active else self.true
            if got != want:
                self.stats.violation(f"{self.where()}: {prompt!r} -> {got!r}, expected {want!r}")
        else:
            loose = self.active == "kn" or (self.active and MODEL not in STRICT_LOCALITY)
            allowed = {true} | ({self.target} if loose else set())
            if got not in allowed:
                self.stats.violation(f"{self.where()}: {prompt!r} -> {got!r}, expected {true!r}")

    def toggle(self) -> None:
        if not self.known:
            out, ok = self.call("/reset")
            if ok and out[1] == []:
                self.active, self.known = None, True
            return
        if self.active is None:
            method = "kn" if self.rng.random() < self.kn_share else "rome"
            t0 = time.perf_counter()
            out, ok = self.call("/edit", MODEL, method, PROMPT.format(self.country), self.country, self.target, None)
            seconds = time.perf_counter() - t0
            if not ok:
                self.known = False  # a gr.Error keeps the state, a dropped connection might not: resync
                return
            report = out[6]  # (status, history, criteria, figure, probes, left out, report, files, python)
            if report.get("method") != method or report.get("new") != self.target or len(report.get("history", [])) != 1:
                self.stats.violation(f"{self.where()}: /edit {method} answered method={report.get('method')!r} "
                                     f"new={report.get('new')!r} history={report.get('history')!r}")
                self.known = False
                return
            self.active = method
            with self.stats.lock:
                self.stats.edits[self.i] = self.stats.edits.get(self.i, 0) + 1
                self.stats.methods[method] = self.stats.methods.get(method, 0) + 1
                first = self.stats.edits[self.i] == 1
            if first:  # the same work in any design: one edit per client, all asked at the start
                self.stats.ok(FIRST_EDITS, seconds)
        else:
            endpoint = "/undo" if self.rng.random() < 0.5 else "/reset"
            out, ok = self.call(endpoint)
            if not ok:
                self.known = False
                return
            if out[1] != []:
                self.stats.violation(f"{self.where()}: {endpoint} left {out[1]!r}, expected no edits")
                self.known = False
                return
            self.active = None

    def status(self) -> None:
        out, ok = self.call("/status")
        if ok:
            bad = [s for s, m in out["models"].items() if not m["unchanged"]]
            if bad:
                self.stats.violation(f"{self.where()}: /status says base weights changed: {bad}")

    def run(self) -> None:
        from gradio_client import Client
        try:
            self.client = Client(self.url, verbose=False)
        except Exception as e:
            self.stats.error(f"client {self.i}: connect: {type(e).__name__}: {str(e)[:300]}")
            return
        step = 0
        while time.time() < self.deadline:
            step += 1
            # the first toggle (an edit) comes early so that every client edits; later ones at random
            late = time.time() > self.deadline - 5  # no new edits at the very end: a short drain
            if step == 2 or (step > 2 and not late and self.rng.random() < 1 / self.edit_every):
                self.toggle()
            elif step % self.status_every == 0:
                self.status()
            else:
                self.predict()


def warm_up(url: str) -> float:
    """Load both models and ROME's one-off statistics, so the figures measure serving, not first use."""
    from gradio_client import Client
    t0 = time.time()
    c = Client(url, verbose=False)
    c.predict(MODEL, PROMPT.format("Canada"), 3, api_name="/predict")
    c.predict("world-bert", MASKED.format("Canada"), 3, api_name="/predict")
    for method in ("rome", "kn"):
        c.predict(MODEL, method, PROMPT.format("Canada"), "Canada", "Rome", None, api_name="/edit")
        c.predict(api_name="/reset")
    return time.time() - t0


def run_load(url: str, clients: int = 8, seconds: float = 60, edit_every: int = 12, kn_share: float = 0.1,
             status_every: int = 15, bert_share: float = 0.05, warmup: bool = False) -> dict:
    """Run ``clients`` concurrent sessions against the app at ``url`` for ``seconds``; ``edit_every``: one
    edit toggle (edit / undo / reset) per that many requests of a client, on average; ``warmup``: first
    load the models and ROME's statistics outside the timed run. Returns the figures."""
    from gradio_client import Client
    facts = client_facts(clients)
    stats = Stats()
    warm = warm_up(url) if warmup else None
    t0 = time.time()
    deadline = t0 + seconds
    workers = [LoadClient(i, url, facts, stats, deadline, edit_every, kn_share, status_every, bert_share)
               for i in range(clients)]
    threads = [threading.Thread(target=w.run, name=f"load-{w.i}", daemon=True) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    wall = time.time() - t0
    try:
        status = Client(url, verbose=False).predict(api_name="/status")
    except Exception as e:
        stats.error(f"final /status: {type(e).__name__}: {e}")
        status = {"requests_served": None, "models": {}}
    requests = {e: len(v) for e, v in stats.latency.items() if e != FIRST_EDITS}  # those are /edit requests too
    return {
        "url": url, "clients": clients, "seconds": seconds, "wall": wall, "warmup": warm,
        "facts": facts,
        "served": sum(requests.values()), "requests": requests,
        "errors": stats.errors, "violations": stats.violations,
        "edits": {i: stats.edits.get(i, 0) for i in range(clients)}, "methods": dict(stats.methods),
        "latency": {e: {"n": len(v), "p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "max": max(v)}
                    for e, v in sorted(stats.latency.items())},
        "status": status,
        "unchanged": bool(status["models"]) and all(m["unchanged"] for m in status["models"].values()),
        "stuck": [t.name for t in threads if t.is_alive()],
    }


def _facts_for(model: str) -> list[tuple[str, str]]:
    return PAIRS_BY_MODEL.get(model, PAIRS)


def wait_behind(url: str, long_model: str = "smollm2-135m", short_model: str = "world-gpt",
                repeats: int = 5, warm: bool = True, target: str | None = None) -> dict:
    """A short ``/predict`` on ``short_model``, timed alone and while another client's ROME ``/edit`` of
    ``long_model`` runs (one session each, as two browser tabs). Both models and ROME's statistics are
    warmed first (``warm``). ``first``: whether every predict made during the edit finished before the edit did."""
    import statistics

    from gradio_client import Client
    from gradio_client.utils import Status
    editor, asker = Client(url, verbose=False), Client(url, verbose=False)
    (country, pair_target), (asked, _) = _facts_for(long_model)[0], _facts_for(short_model)[1]
    short_args = (short_model, MASKED.format(asked) if short_model == "world-bert" else PROMPT.format(asked), 3)
    target = target or pair_target  # an edit no earlier request made: the app's result cache must not answer it
    edit_args = (long_model, "rome", PROMPT.format(country), country, target, None)
    # the warm-up edits the same fact to another target: the timed edit must compute, not come from the result cache
    warm_args = (*edit_args[:4], _facts_for(long_model)[1][1], None)

    def predict() -> float:
        t0 = time.perf_counter()
        asker.predict(*short_args, api_name="/predict")
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    if warm:
        editor.predict(*warm_args, api_name="/edit")  # loads the model and ROME's statistics
        editor.predict(api_name="/reset")
    predict()
    warmed = time.perf_counter() - t0
    alone = [predict() for _ in range(repeats)]
    t0 = time.perf_counter()
    job = editor.submit(*edit_args, api_name="/edit")
    running = {Status.PROCESSING, Status.ITERATING, Status.PROGRESS, Status.LOG}  # /edit reports progress
    while job.status().code not in running and not job.done():
        time.sleep(0.02)
    time.sleep(0.1)  # past the handler's first lines: inside the model worker
    during, ends = [], []
    while not job.done() and len(during) < repeats:
        during.append(predict())
        ends.append(job.done())  # True: the edit finished first
    job.result()
    edit = time.perf_counter() - t0
    editor.predict(api_name="/reset")
    med_alone, med_during = statistics.median(alone), statistics.median(during) if during else float("nan")
    return {"long": long_model, "short": short_model, "warm": warmed, "edit": edit, "alone": med_alone,
            "during": med_during, "ratio": med_during / med_alone, "n_during": len(during),
            "first": bool(during) and not any(ends), "alone_all": alone, "during_all": during}


def wait_report(w: dict) -> str:
    return (f"a {w['short']} /predict while another client's {w['long']} /edit runs: median {_ms(w['during'])} "
            f"(n={w['n_during']}) against {_ms(w['alone'])} alone (n={len(w['alone_all'])}): ratio {w['ratio']:.1f}x; "
            f"the edit took {_ms(w['edit'])}; every predict finished before the edit: {w['first']}")


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def report(res: dict) -> str:
    warm = f", after a {res['warmup']:.1f} s warm-up" if res.get("warmup") is not None else ""
    lines = [f"{res['clients']} clients x {res['seconds']:.0f} s against {res['url']} (wall {res['wall']:.1f} s{warm})",
             f"requests served: {res['served']} (" + ", ".join(f"{e} {n}" for e, n in sorted(res["requests"].items()))
             + f"); server counted {res['status'].get('requests_served')} model requests",
             "edits per client: " + " ".join(str(n) for n in res["edits"].values()) + " ("
             + ", ".join(f"{m} {n}" for m, n in sorted(res["methods"].items())) + ")",
             f"errors: {len(res['errors'])}"]
    lines += [f"  {m}" for m in res["errors"][:5]]
    lines.append(f"isolation violations: {len(res['violations'])}")
    lines += [f"  {m}" for m in res["violations"][:5]]
    if res["stuck"]:
        lines.append(f"client threads still running at the end: {res['stuck']}")
    lines.append(f"{'latency (client wall)':<28}{'n':>6}{'p50':>10}{'p95':>10}{'max':>10}")
    for e, l in res["latency"].items():
        lines.append(f"{e:<28}{l['n']:>6}{_ms(l['p50']):>10}{_ms(l['p95']):>10}{_ms(l['max']):>10}")
    models = res["status"].get("models", {})
    lines.append("server /status: " + ("; ".join(
        f"{s} {'unchanged' if m['unchanged'] else 'CHANGED'} ({m['checksum'][:12]})" for s, m in models.items())
        or "unavailable"))
    lat = res["latency"]
    figs = ", ".join(f"{e} {_ms(lat[e]['p50'])} / {_ms(lat[e]['p95'])}" for e in ("/predict", "/edit") if e in lat)
    lines.append(f"summary: {res['clients']} concurrent clients x {res['seconds']:.0f} s, each editing its own fact: "
                 f"{res['served']} requests, {len(res['errors'])} errors, {len(res['violations'])} isolation "
                 f"violations, base weights {'unchanged' if res['unchanged'] else 'CHANGED'}; p50 / p95 {figs}.")
    return "\n".join(lines)


def markdown(res: dict) -> str:
    """The run's figures for the record: what was checked, then latency per endpoint."""
    return (f"{res['clients']} clients x {res['seconds']:.0f} s on {MODEL}, each editing its own fact: "
            f"{res['served']} requests, **{len(res['errors'])} errors, {len(res['violations'])} isolation violations**, "
            f"base weights {'unchanged' if res['unchanged'] else 'CHANGED'} at the end (`/status`).\n\n"
            + sections.table(["endpoint", "requests", "p50", "p95", "max"],
                           [[e, l["n"], _ms(l["p50"]), _ms(l["p95"]), _ms(l["max"])] for e, l in res["latency"].items()]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(log_path: str, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # a fresh server: no result kept on disk by an earlier run answers this one (KNLAB_CACHE_DISK_MB=0)
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "KNLAB_CACHE_DISK_MB": "0"}
    fh = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited: {Path(log_path).read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app did not start: {Path(log_path).read_text()[-2000:]}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--edit-every", type=int, default=12, help="one edit toggle per this many requests (mean)")
    ap.add_argument("--kn-share", type=float, default=0.1, help="share of edits made with KN instead of ROME")
    ap.add_argument("--no-warmup", action="store_true", help="time the first model load and ROME statistics too")
    ap.add_argument("--url", default=None, help="an already-running app (default: start python app.py)")
    ap.add_argument("--model", default=MODEL, choices=sorted(PAIRS_BY_MODEL),
                    help="the model the clients edit (smollm2-135m: use --kn-share 0, a KN edit takes ~30 s there)")
    ap.add_argument("--wait-long", default="smollm2-135m", choices=sorted(PAIRS_BY_MODEL),
                    help="the model another client edits while a predict is timed (the wait-behind measurement)")
    ap.add_argument("--wait-short", default="world-gpt", help="the model of the timed predict")
    ap.add_argument("--wait-repeats", type=int, default=5, help="predicts timed alone, and at most during the edit")
    ap.add_argument("--no-wait", action="store_true", help="skip the wait-behind measurement")
    sections.add_argument(ap)
    args = ap.parse_args(argv)
    globals()["MODEL"] = args.model  # the clients read the module's MODEL
    proc, log = None, None
    url = args.url
    if url is None:
        log = os.path.join(tempfile.mkdtemp(prefix="knlab-load-"), "app.log")
        t0 = time.time()
        proc, url = start_app(log)
        print(f"app started in {time.time() - t0:.1f} s (log {log})", flush=True)
    res, wait = None, None
    try:
        if args.seconds > 0:
            res = run_load(url, args.clients, args.seconds, args.edit_every, args.kn_share, warmup=not args.no_warmup)
            print(report(res), flush=True)
        if not args.no_wait:
            wait = wait_behind(url, args.wait_long, args.wait_short, args.wait_repeats)
            print(wait_report(wait))
    finally:
        if proc is not None:
            stop_app(proc)
    if args.markdown:
        parts = ([markdown(res)] if res is not None else []) + ([wait_report(wait)] if wait is not None else [])
        sections.write_section(args.markdown, sections.section_name(__file__, None if args.model == "world-gpt" else args.model),
                             "\n\n".join(parts), command=sections.command_line(None if argv is None else [__file__, *argv]))
    ok = res is None or (not res["errors"] and not res["violations"] and res["unchanged"])
    return 0 if ok and (wait is None or wait["first"]) else 1


if __name__ == "__main__":
    sys.exit(main())
