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
from knlab.core.nethook import stored
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

    @property
    def weights_dtype(self) -> str:
        """The dtype the weights are stored in: float32, unless the model did not fit its device so
        (``weights_dtype_for``)."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def compute_dtype(self, method: str) -> str:
        """The dtype ``method`` ("rome", "ig", "trace") runs in on this model: its weights' own when they
        are not float32 (a model too large for its GPU in float32), else the choice resolved for this method
        and device (``knlab.core.dtype.method_dtype``)."""
        from knlab.core.dtype import method_dtype
        if self.weights_dtype != "float32":
            return self.weights_dtype
        return method_dtype(self.dtype_choice, method, self.device)

    def autocast(self, method: str):
        """The context ``method``'s forward passes run in (nothing at all for float32 or for half weights,
        which run in their own dtype)."""
        from knlab.core.dtype import autocast
        dtype = self.compute_dtype(method)
        return autocast(dtype if self.weights_dtype == "float32" else "float32", self.device)

    @property
    def masked(self) -> bool:
        return self.arch.masked

    @property
    def device(self) -> torch.device:
        """Where its inputs go: the input embeddings' device (a model spread by accelerate's ``device_map``
        runs each layer where its weights are; an offloaded layer's weights show as ``meta``)."""
        placed = getattr(self.model, "hf_device_map", None)
        if placed:
            first = next((d for d in placed.values() if d not in ("cpu", "disk", "meta")), "cpu")
            return torch.device(f"cuda:{first}" if isinstance(first, int) else first)
        first = next(self.model.parameters()).device
        if first.type != "meta":
            return first
        hooked = (getattr(m._hf_hook, "execution_device", None) for m in self.model.modules() if hasattr(m, "_hf_hook"))
        return torch.device(next((d for d in hooked if d is not None), "cpu"))  # offloaded: where it computes

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


def weights_dtype_for(device: str | torch.device, float32_bytes: int) -> torch.dtype:
    """The dtype a model's weights are stored in on ``device``: float32 wherever they fit (every CPU; a GPU
    whose free memory holds them 1.5 times over, the rest for activations), else bfloat16 on a GPU that has
    it and float16 on one that does not. The methods' compute dtype is a separate choice (``knlab.core.dtype``)."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.float32
    free, _ = torch.cuda.mem_get_info(device)
    if free > 1.5 * float32_bytes:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def place_checked(lm: LM, device: str | None = None) -> str:
    """Put ``lm`` on ``device`` (default: CUDA where there is one) in the dtype its weights keep there
    (``weights_dtype_for``), returning the checksum of every weight taken on the CPU before the move: on
    ZeroGPU the main process can read its weights only from its main thread, and only before they are placed
    (``knlab.serve.worker``)."""
    device = device or default_device()
    dtype = weights_dtype_for(device, sum(t.nbytes for t in lm.model.state_dict().values()))
    lm.model.to(dtype)
    checksum = weights_checksum(lm.model)
    lm.model.to(device)
    return checksum


def load_tokenizer(spec: str) -> LM:
    """``spec``'s tokenizer and architecture entry, on no weights (``model`` is None): what the tokens preview
    needs, read without loading the model or touching a device."""
    from transformers import AutoTokenizer

    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"no model given; {available()}")
    spec = spec.strip()
    _quiet()
    source = _resolve(spec)
    if source.lower().endswith(".gguf") and Path(source).is_file():
        source = _local_gguf(spec, Path(source), torch.float32)  # converted once into the cache, on the CPU
    config, local = _config(source, spec)
    arch = _family(config.model_type, spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load the tokenizer of {spec!r} ({reason[:200]}); {available()}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    shipped = SHIPPED_MODELS.get(spec)
    return LM(spec, None, tokenizer, arch, shipped.embedding_std if shipped else None)


def load_model(spec: str = "world-gpt", device: str | None = None, dtype: torch.dtype | None = None,
               compute: str | None = None, device_map: str | dict | None = None,
               max_memory: dict | None = None, offload_folder: str | None = None) -> LM:
    """Load ``spec`` with the Auto classes (never ``trust_remote_code``) and find its architecture entry.
    ``dtype``: the weights' (float32 wherever they fit: ``weights_dtype_for``); ``compute``: the methods'
    compute dtype choice (``knlab.core.dtype``: auto / float32 / float16 / bfloat16; default ``KNLAB_DTYPE``,
    else auto). ``device_map`` (with ``max_memory``, ``offload_folder``): a model larger than one device,
    spread by accelerate (``"auto"``, or a map of module names to devices); ``device`` is then ignored."""
    from knlab.core.dtype import check_choice
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"no model given; {available()}")
    spec = spec.strip()
    compute = check_choice(compute)
    _quiet()
    source = _resolve(spec)
    device = device or default_device()
    # the checks, each one line, before anything heavy: the family, the size, the tokenizer; then the weights
    if source.lower().endswith(".gguf"):
        if not Path(source).is_file():
            raise ModelLoadError(f"cannot load model {spec!r}: no such GGUF file; {available()}")
        source = _local_gguf(spec, Path(source), dtype or torch.float32)
    config, local = _config(source, spec)
    arch = _family(config.model_type, spec)
    check_size(spec, _parameters_of(config, arch.masked), dtype or torch.float32)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=local)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model {spec!r}: no tokenizer could be read from it ({reason[:160]}); "
                             f"knlab needs one to read prompts") from None
    cls = AutoModelForMaskedLM if arch.masked else AutoModelForCausalLM
    spread = {} if device_map is None else {"device_map": device_map, "max_memory": max_memory,
                                            "offload_folder": offload_folder}
    try:
        model = cls.from_pretrained(source, dtype=dtype or torch.float32, trust_remote_code=False,
                                    local_files_only=local, **spread)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model {spec!r} ({reason[:200]}); {available()}") from None
    model.eval()
    if device_map is None:
        if dtype is None:
            model.to(weights_dtype_for(device, sum(t.nbytes for t in model.state_dict().values())))
        model.to(device)
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


def kernels(device: torch.device | str) -> str:
    """The float32 kernels that compute on ``device``: on a CPU, the instruction set torch dispatches to
    (AVX2, AVX512, ...; ``ATEN_CPU_CAPABILITY`` caps it), whose sums differ in the last bits from another's.
    Part of the key of anything cached from a model's numbers (ROME's covariance, its context templates)."""
    device = torch.device(device)
    return torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type


def tensor_checksum(t: torch.Tensor) -> str:
    # hashed from the tensor's own buffer: no copy of its bytes (half the time of .tobytes() on the real model)
    return hashlib.blake2b(t.detach().contiguous().cpu().view(torch.uint8).numpy(), digest_size=16).hexdigest()


PARALLEL_CHECKSUM_BYTES = 64 << 20  # the organisms (13 MB) hash faster on one thread than by starting a pool


def weights_checksum(model: torch.nn.Module) -> str:
    """A checksum of every parameter and buffer, bit for bit: equal means the base model is intact.

    The worker takes it after every long request (~650 MB on the real model), so the per-tensor hashes run
    on a thread per core (hashlib lets go of the GIL while it hashes) and a tensor shared under two names
    (tied input and output embeddings) is hashed once: the value is what hashing each name in turn gives."""
    state = {name: t if t.device.type != "meta" else stored(model, name)  # a spread model's offloaded weights
             for name, t in model.state_dict(keep_vars=False).items()}
    named = [(name, _storage_view(t), t) for name, t in sorted(state.items())]
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
