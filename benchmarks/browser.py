"""A browser's page of the app, over HTTP: what the page's JavaScript sends, and nothing more.

Why not ``gradio_client``: it is an API client, not a page. It fetches and parses the API description a page never
asks for, makes a new HTTP connection (and TLS context) for every request, and does not run the page's load events;
thirty of them in one benchmark process spend the benchmark's own CPU, on the same two cores as the server, and
show up as server latency. A page does this (Gradio's ``sse_v3`` protocol, as its JavaScript client speaks it):

1. ``GET /``: the HTML, which carries the app's config (the layout, every component's initial value, every
   event's inputs and outputs);
2. a heartbeat stream (``GET /gradio_api/heartbeat/{session}``), held open while the page is: the server learns
   from it when the tab closes;
3. every ``load`` event of the page, sent at once with its inputs' initial values (``POST /gradio_api/queue/join``),
   as soon as the page has its config;
4. a click is one more ``queue/join``. Each answer arrives on one event stream per session
   (``GET /gradio_api/queue/data``), which the server closes when the session has no event pending; the page opens
   it again with its next event.

A ``Page`` times each event from its ``queue/join`` to its ``process_completed`` and keeps the server's messages
in between (``Answer.stages``), so a slow answer says where it waited: before the server took it
(``estimation`` -> ``process_starts``) or while it ran.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx


def page_config(html: str) -> dict:
    """The app's config as the page's HTML carries it (``window.gradio_config = {...}``): a browser reads it there
    and never asks ``/config``."""
    start = html.find(CONFIG_MARK)
    if start < 0:
        raise PageError("the page carries no gradio_config")
    config, _ = json.JSONDecoder().raw_decode(html, start + len(CONFIG_MARK))
    return config


CONFIG_MARK = "window.gradio_config = "


class PageError(Exception):
    """The server answered an event with an error (its message), or the page could not send it."""


@dataclass
class Answer:
    """One event's answer: its outputs, the seconds from sending it to its completion, and when (seconds after
    sending) each of the server's messages about it arrived."""

    data: list
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def queued(self) -> float:
        """Seconds the event waited in the server's queue before it started (0 when no message said)."""
        return self.stages.get("process_starts", 0.0)


class Page:
    """One browser tab on the app at ``url``: one Gradio session, its heartbeat, its event stream."""

    def __init__(self, url: str, load_events: bool = True, timeout: float = 3600):
        self.url = url.rstrip("/")
        self.session = uuid.uuid4().hex[:11]
        self.http = httpx.Client(timeout=httpx.Timeout(timeout, connect=30))  # one pool, as a browser keeps
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pending = 0  # events sent whose completion has not arrived
        self._answers: dict[str, queue.Queue] = {}  # event id -> its messages
        self._reader: threading.Thread | None = None
        self._closed = threading.Event()
        t0 = time.perf_counter()
        html = self.http.get(self.url + "/")
        html.raise_for_status()
        self.config = page_config(html.text)
        self.opened_in = time.perf_counter() - t0
        self.prefix = self.config.get("api_prefix", "/gradio_api")
        self._values = {c["id"]: c.get("props", {}).get("value") for c in self.config["components"]}
        self._by_api = {d["api_name"]: d for d in self.config["dependencies"] if d.get("api_name")}
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()
        self.loaded_in: float | None = None
        if load_events:
            self.load()

    # -- what the page does -------------------------------------------------------------------------------------

    def load(self) -> list[Answer]:
        """Send every ``load`` event with its inputs' initial values, at once, and wait for them all: their answers
        (the seconds until the last completed are kept as ``loaded_in``)."""
        t0 = time.perf_counter()
        loads = self.load_dependencies()
        with ThreadPoolExecutor(len(loads) or 1) as pool:  # a page's fetches go out together, not one by one
            sent = list(pool.map(lambda d: self._send(d["id"], [self._values.get(i) for i in d["inputs"]],
                                                      d["targets"][0][0]), loads))
        answers = [self._wait(event, t0) for event in sent]
        self.loaded_in = time.perf_counter() - t0
        return answers

    def load_dependencies(self) -> list[dict]:
        """The page's events that run when it opens (``app.load``), from its config."""
        return [d for d in self.config["dependencies"] if any(t[1] == "load" for t in d["targets"])]

    @staticmethod
    def shown(answer: Answer) -> bool:
        """Whether an event's answer changed anything on the page (``gr.skip()`` leaves every output as it is)."""
        return any(not (isinstance(v, dict) and v.get("__type__") == "update" and len(v) == 1) for v in answer.data)

    def click(self, api_name: str, *args: Any) -> Answer:
        """The event named ``api_name`` with ``args`` as its inputs' values (as a click sends them); its answer, or
        PageError with the server's message."""
        dep = self._by_api.get(api_name.lstrip("/"))
        if dep is None:
            raise PageError(f"no event named {api_name!r}")
        if len(args) != len(dep["inputs"]):
            raise PageError(f"{api_name} takes {len(dep['inputs'])} inputs, not {len(args)}")
        t0 = time.perf_counter()
        return self._wait(self._send(dep["id"], list(args), dep["targets"][0][0] if dep["targets"] else None), t0)

    def close(self) -> None:
        """Close the tab: the heartbeat ends (the server drops the session's pending events), the pool closes."""
        self._closed.set()
        self.http.close()

    # -- the protocol -------------------------------------------------------------------------------------------

    def _send(self, fn_index: int, data: list, trigger_id: int | None) -> str:
        with self._lock:  # counted before the join: the reader must not leave while this event is on its way
            self._pending += 1
        try:
            r = self.http.post(f"{self.url}{self.prefix}/queue/join",
                               json={"data": data, "event_data": None, "fn_index": fn_index,
                                     "trigger_id": trigger_id, "session_hash": self.session})
            if r.status_code != 200:
                raise PageError(f"queue/join {r.status_code}: {r.text[:300]}")
            event = r.json()["event_id"]
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        with self._lock:
            self._answers.setdefault(event, queue.Queue())
            if self._reader is None or not self._reader.is_alive():
                self._reader = threading.Thread(target=self._read, daemon=True)
                self._reader.start()
        return event

    def _wait(self, event: str, t0: float) -> Answer:
        stages: dict[str, float] = {}
        messages = self._answers[event]
        while True:
            try:
                msg = messages.get(timeout=self.timeout)
            except queue.Empty:
                raise PageError(f"no answer in {self.timeout:.0f} s") from None
            stages.setdefault(msg["msg"], time.perf_counter() - t0)
            if msg["msg"] == "process_completed":
                with self._lock:
                    self._answers.pop(event, None)
                out = msg.get("output") or {}
                if not msg.get("success", False):
                    raise PageError(str(out.get("error") or msg.get("title") or "the event failed"))
                return Answer(out.get("data", []), time.perf_counter() - t0, stages)
            if msg["msg"] in ("unexpected_error", "server_stopped"):
                raise PageError(str(msg.get("message")))

    def _read(self) -> None:
        """The session's event stream: each message to its event's queue. The server closes the stream when no
        event of the session is pending; it is opened again at once if one was sent meanwhile (its messages
        wait in the server's queue for the next stream)."""
        while not self._closed.is_set():
            try:
                with self.http.stream("GET", f"{self.url}{self.prefix}/queue/data",
                                      params={"session_hash": self.session}) as r:
                    for line in r.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        msg = json.loads(line[5:])
                        if msg["msg"] in ("heartbeat", "close_stream"):
                            continue
                        if msg.get("session_not_found"):  # opened before the server had the session: again
                            time.sleep(0.1)
                            break
                        if msg["msg"] == "unexpected_error" and not msg.get("event_id"):
                            for q in list(self._answers.values()):
                                q.put(msg)
                            continue
                        with self._lock:
                            q = self._answers.setdefault(msg["event_id"], queue.Queue())
                            if msg["msg"] == "process_completed":
                                self._pending -= 1
                        q.put(msg)
            except httpx.HTTPError:
                if self._closed.is_set():
                    return
                time.sleep(0.2)
            with self._lock:
                if self._pending <= 0:
                    self._reader = None
                    return

    def _beat(self) -> None:
        try:
            with self.http.stream("GET", f"{self.url}{self.prefix}/heartbeat/{self.session}") as r:
                for _ in r.iter_lines():
                    if self._closed.is_set():
                        return
        except (httpx.HTTPError, RuntimeError):
            return
