"""Loading models: the shipped world models by name, anything else by Hugging Face id or local path."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from knlab.core.arch import ARCHITECTURES, Arch, UnsupportedModel, arch_for, declare_layout, ffn_width, n_layers
from knlab.core.errors import KnlabError
from knlab.core.packaged import PACKAGED, NotInstalled, converted, installed

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SHIPPED = {"world-gpt": ASSETS / "models" / "world-gpt", "world-bert": ASSETS / "models" / "world-bert"}


@dataclass(frozen=True)
class ShippedModel:
    """A model knlab offers by name: a real pretrained LM from a package, or one of its own organisms."""

    name: str
    purpose: str  # what it is for, as the app's model list shows it
    # The std of its token embeddings over the tokens of the world corpus (its first 4,000 documents), as
    # ROME measures it over the subjects of its facts: 3x this is the causal trace's noise. Kept here, not
    # recomputed, so that serving never rebuilds the training corpus; the organisms' tests re-measure it
    # (tests/organisms/test_noise_level.py) and say what to write here when a model is retrained.
    embedding_std: float


SHIPPED_MODELS: dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel("smollm2-135m", "a real pretrained LM (SmolLM2-135M-Instruct, LLaMA, 30 layers)", 0.12135590612888336),
    ShippedModel("world-gpt", "model organism, causal: 6 layers trained on the world's facts", 0.010414774529635906),
    ShippedModel("world-bert", "model organism, masked ([MASK]): 6 layers trained on the world's facts",
                 0.047708358615636826),
)}


def shipped_installed() -> list[str]:
    """The shipped models this machine can load now (the real one needs its package installed)."""
    return [n for n in SHIPPED_MODELS if n not in PACKAGED or installed(PACKAGED[n])]


def default_model() -> str:
    """The real model when it is installed, else the causal organism."""
    return "smollm2-135m" if "smollm2-135m" in shipped_installed() else "world-gpt"


class ModelLoadError(KnlabError):
    """A model could not be loaded; the message says what is available instead."""


@dataclass
class LM:
    """A loaded model with what every method needs to address it."""

    spec: str
    model: torch.nn.Module
    tokenizer: object
    arch: Arch
    embedding_std: float | None = None  # the reference std of its embeddings, where known (ShippedModel)
    dtype_choice: str = "auto"  # knlab.core.dtype.CHOICES: the methods' compute dtype (KNLAB_DTYPE / --dtype)

    def __post_init__(self) -> None:
        if self.model is not None:  # the worker's tokenizer-only copy has none
            declare_layout(self.model, self.arch)

    def compute_dtype(self, method: str) -> str:
        """The dtype ``method`` ("rome", "ig", "trace") runs in on this model: its weights' own when they
        are not float32 (a GPU's float16), else the choice resolved for this method and device
        (``knlab.core.dtype.method_dtype``)."""
        from knlab.core.dtype import method_dtype
        weights = next(self.model.parameters()).dtype
        if weights != torch.float32:
            return str(weights).removeprefix("torch.")
        return method_dtype(self.dtype_choice, method, self.device)

    def autocast(self, method: str):
        """The context ``method``'s forward passes run in (nothing at all for float32)."""
        from knlab.core.dtype import autocast
        dtype = self.compute_dtype(method)
        return autocast("float32" if dtype != "bfloat16" else dtype, self.device)

    @property
    def masked(self) -> bool:
        return self.arch.masked

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return n_layers(self.model, self.arch)

    @property
    def ffn_width(self) -> int:
        return ffn_width(self.model, self.arch)


def available() -> str:
    return (f"shipped models: {', '.join(SHIPPED_MODELS)}; or a Hugging Face model id, a local folder or a .gguf "
            f"file of a supported family ({', '.join(ARCHITECTURES)})")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _quiet() -> None:
    from transformers.utils import logging as tlog
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        from huggingface_hub.utils import logging as hlog
        hlog.set_verbosity_error()
    except Exception:
        pass


def _config(source: str, spec: str):
    """Local path or cache first; the network only when the hub is reachable (no minute of retries)."""
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True), True
    except Exception:
        pass
    if Path(source).exists():
        raise ModelLoadError(f"{spec!r} is a folder but not a loadable model (no config.json?); {available()}")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
        raise ModelLoadError(f"cannot load model {spec!r}: it is not in the local cache and the Hugging Face hub "
                             f"cannot be reached from here; {available()}")
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False), False
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model {spec!r} ({reason[:200]}); {available()}") from None


MEMORY_ENV = "KNLAB_MAX_MODEL_GB"
DEFAULT_MEMORY_SHARE = 0.4  # of the machine's memory: the worker holds two copies of a model (its two lanes)


def memory_limit_bytes() -> int:
    """The most memory one loaded model's weights may take: ``KNLAB_MAX_MODEL_GB`` (gigabytes, 1e9 bytes), else
    40% of this machine's memory, so that the worker's two copies of it fit with room to compute."""
    raw = os.environ.get(MEMORY_ENV, "").strip()
    if raw:
        try:
            gb = float(raw)
        except ValueError:
            raise ModelLoadError(f"{MEMORY_ENV}={raw!r} is not a number of gigabytes") from None
        return int(gb * 1e9)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no limit it could know
        return 1 << 62
    return int(DEFAULT_MEMORY_SHARE * total)


def check_size(spec: str, n_params: int, dtype: torch.dtype) -> None:
    """Refuse, before any weight is read, a model whose weights in ``dtype`` exceed ``memory_limit_bytes``."""
    need = n_params * torch.empty((), dtype=dtype).element_size()
    limit = memory_limit_bytes()
    if need > limit:
        count = f"{n_params / 1e9:.2f}B" if n_params >= 1e9 else f"{n_params / 1e6:.3g}M"
        raise ModelLoadError(f"cannot load model {spec!r}: its {count} parameters take {need / 1e9:.3g} GB as "
                             f"{str(dtype).removeprefix('torch.')}, over this machine's limit of "
                             f"{limit / 1e9:.3g} GB ({MEMORY_ENV}); {available()}")


def _family(model_type: str, spec: str) -> Arch:
    try:
        return arch_for(model_type)
    except UnsupportedModel as e:
        raise ModelLoadError(f"cannot load model {spec!r}: {e}") from None


def _parameters_of(config, masked: bool) -> int:
    """The model's parameter count from its config alone: the model built on the meta device (no memory, no
    weights), tied weights counted once."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM
    cls = AutoModelForMaskedLM if masked else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters())


def _local_gguf(spec: str, path: Path, dtype: torch.dtype) -> str:
    """A user's own GGUF file: its header checked (family, tokenizer, size) before the one heavy step, its
    conversion into a float32 safetensors folder in knlab's cache (``packaged.converted_file``)."""
    from knlab.core.packaged import converted_file, gguf_dependencies_missing, read_gguf_header
    try:
        header = read_gguf_header(path)
    except (ValueError, OSError) as e:
        raise ModelLoadError(f"cannot load model {spec!r}: {e}; {available()}") from None
    _family(header.model_type or "(none given)", spec)
    if not header.has_tokenizer:
        raise ModelLoadError(f"cannot load model {spec!r}: the GGUF file carries no tokenizer "
                             f"(tokenizer.ggml.*), and knlab needs one to read prompts")
    check_size(spec, header.n_params, dtype)
    missing = gguf_dependencies_missing()
    if missing:
        raise ModelLoadError(f"reading a GGUF model needs {' and '.join(missing)}: pip install gguf accelerate")
    return str(converted_file(path))


def _resolve(spec: str) -> str:
    if spec in PACKAGED:
        try:
            return str(converted(PACKAGED[spec]))
        except NotInstalled as e:
            raise ModelLoadError(str(e)) from None
    if spec in SHIPPED:
        path = SHIPPED[spec]
        if not (path / "config.json").exists():
            raise ModelLoadError(f"the shipped model {spec} is missing at {path}; "
                                 f"train it with: python -m knlab train {spec}")
        return str(path)
    return spec


def load_model(spec: str = "world-gpt", device: str | None = None, dtype: torch.dtype | None = None,
               compute: str | None = None) -> LM:
    """Load ``spec`` with the Auto classes (never ``trust_remote_code``) and find its architecture entry.
    ``dtype``: the weights' (float32 on a CPU); ``compute``: the methods' compute dtype choice
    (``knlab.core.dtype``: auto / float32 / bfloat16; default ``KNLAB_DTYPE``, else auto)."""
    from knlab.core.dtype import check_choice
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"no model given; {available()}")
    spec = spec.strip()
    compute = check_choice(compute)
    _quiet()
    source = _resolve(spec)
    device = device or default_device()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.float16
    # the checks, each one line, before anything heavy: the family, the size, the tokenizer; then the weights
    if source.lower().endswith(".gguf"):
        if not Path(source).is_file():
            raise ModelLoadError(f"cannot load model {spec!r}: no such GGUF file; {available()}")
        source = _local_gguf(spec, Path(source), dtype)
    config, local = _config(source, spec)
    arch = _family(config.model_type, spec)
    check_size(spec, _parameters_of(config, arch.masked), dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model {spec!r}: no tokenizer could be read from it ({reason[:160]}); "
                             f"knlab needs one to read prompts") from None
    cls = AutoModelForMaskedLM if arch.masked else AutoModelForCausalLM
    try:
        model = cls.from_pretrained(source, dtype=dtype, trust_remote_code=False, local_files_only=local)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model {spec!r} ({reason[:200]}); {available()}") from None
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    shipped = SHIPPED_MODELS.get(spec)
    return LM(spec, model, tokenizer, arch, shipped.embedding_std if shipped else None, compute)


def from_model(model: torch.nn.Module, tokenizer: object, spec: str = "custom", compute: str | None = None) -> LM:
    """Wrap an already-built model (tests use tiny random configs of every family)."""
    from knlab.core.dtype import check_choice
    compute = check_choice(compute)
    arch = arch_for(model.config.model_type)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LM(spec, model, tokenizer, arch, dtype_choice=compute)


def tensor_checksum(t: torch.Tensor) -> str:
    # hashed from the tensor's own buffer: no copy of its bytes (half the time of .tobytes() on the real model)
    return hashlib.blake2b(t.detach().contiguous().cpu().view(torch.uint8).numpy(), digest_size=16).hexdigest()


PARALLEL_CHECKSUM_BYTES = 64 << 20  # the organisms (13 MB) hash faster on one thread than by starting a pool


def weights_checksum(model: torch.nn.Module) -> str:
    """A checksum of every parameter and buffer, bit for bit: equal means the base model is intact.

    The worker takes it after every long request (~650 MB on the real model), so the per-tensor hashes run
    on a thread per core (hashlib lets go of the GIL while it hashes) and a tensor shared under two names
    (tied input and output embeddings) is hashed once: the value is what hashing each name in turn gives."""
    named = [(name, _storage_view(t), t) for name, t in sorted(model.state_dict(keep_vars=False).items())]
    views = {view: t for _, view, t in named}  # each distinct piece of memory once
    if sum(t.nbytes for t in views.values()) < PARALLEL_CHECKSUM_BYTES:  # starting threads costs more
        sums = {v: tensor_checksum(t) for v, t in views.items()}
    else:
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
            sums = dict(zip(views, pool.map(tensor_checksum, views.values())))
    h = hashlib.blake2b(digest_size=16)
    for name, view, _ in named:
        h.update(name.encode())
        h.update(sums[view].encode())
    return h.hexdigest()


def _storage_view(t: torch.Tensor) -> tuple:
    """What decides a tensor's bytes: two names with the same view of the same memory hash the same."""
    return t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()


def shipped_weights_bytes() -> int:
    return sum(f.stat().st_size for p in SHIPPED.values() if p.exists() for f in p.glob("*.safetensors"))


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
