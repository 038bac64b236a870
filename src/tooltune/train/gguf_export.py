"""`tooltune export RUN --gguf OUT.gguf`: a run's merged model as one GGUF file for the llama.cpp family (llama.cpp,
Ollama, LM Studio), with the run's chat format as the file's chat template and an Ollama Modelfile beside it.

What is written follows llama.cpp's `convert_hf_to_gguf.py` for the two architectures it supports here (`ARCHS`):
tensor names from gguf-py's name map; llama's q/k rows permuted into llama.cpp's rotary layout (transformers undoes
it when it loads the file); Gemma-3's RMSNorm weights stored with the +1 that its norm adds (transformers subtracts it
back); norms and other 1-D tensors in float32, the rest in float16 or Q8_0 (`QUANTS`; a matrix whose rows are not a
whole number of 32-value blocks stays float16, as in llama.cpp, and is counted in the report). The tokenizer goes in
as llama.cpp's metadata: a byte-level BPE (`gpt2`: tokens, token types, merges, the pre-tokenizer's name) or a
SentencePiece-style BPE with byte fallback (`llama`: tokens, scores, token types, Gemma's whitespace pieces), with
the bos/eos/unk/pad ids and whether a bos is added.

The file is written to a temporary name beside OUT and renamed when whole, Modelfile included: an error leaves
nothing behind, and an existing file is replaced only when asked (`force`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tooltune import rundir
from tooltune.dialogue import Tool
from tooltune.errors import InputError, ToolTuneError
from tooltune.formats import get_format
from tooltune.formats.runtimes import runtime_for
from tooltune.runs import training_data
from tooltune.train.export import merged_model
from tooltune.train.gguf_vocab import write_tokenizer


@dataclass(frozen=True)
class Quant:
    name: str
    matrix_type: str
    """gguf-py `GGMLQuantizationType` name of 2-D tensors (the rest stays float32)."""
    file_type: str
    """gguf-py `LlamaFileType` name written as `general.file_type`."""


QUANTS = {q.name: q for q in (Quant("f16", "F16", "MOSTLY_F16"), Quant("q8_0", "Q8_0", "MOSTLY_Q8_0"))}


@dataclass(frozen=True)
class Arch:
    """How one transformers architecture becomes llama.cpp's."""

    gguf_arch: str
    """gguf-py `MODEL_ARCH` member name."""
    check: Callable[[Any], list[str]]
    """What in the config llama.cpp (or transformers' GGUF loader) would compute differently; [] = nothing."""
    hparams: Callable[[Any, Any], None]
    """Write the architecture's metadata: (writer, config)."""
    tensor: Callable[[str, Any, Any], Any]
    """(transformers name, float32 tensor, config) -> the tensor as llama.cpp stores it."""
    spm_token: Callable[[str], tuple[str, int | None]] = lambda token: (token, None)
    """A SentencePiece-style vocabulary token -> (as llama.cpp spells it, token type or None for the usual rule)."""
    add_space_prefix: bool | None = None
    """Written as `tokenizer.ggml.add_space_prefix` for a SentencePiece-style vocabulary (None: from the tokenizer)."""


# ---- llama ----------------------------------------------------------------------------------------------------------

def _rope(config: Any, layer_type: str | None = None) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or {"rope_theta": getattr(config, "rope_theta", 10000.0)}
    if layer_type is not None and layer_type in params:
        params = params[layer_type]
    return params


def _llama_check(config: Any) -> list[str]:
    problems = []
    if _rope(config).get("rope_type", "default") != "default":
        problems.append(f"rope_parameters.rope_type={_rope(config)['rope_type']!r} (only 'default' is written)")
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(config, flag, False):
            problems.append(f"{flag}=True")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act={config.hidden_act!r} (llama.cpp's llama uses silu)")
    return problems


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _common_hparams(writer: Any, config: Any) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def _llama_hparams(writer: Any, config: Any) -> None:
    _common_hparams(writer, config)
    writer.add_rope_freq_base(_rope(config).get("rope_theta", 10000.0))
    writer.add_rope_dimension_count(_head_dim(config))
    if _head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(_head_dim(config))
        writer.add_value_length(_head_dim(config))


def _permute(weights: Any, heads: int) -> Any:
    """llama.cpp's rotary layout of q/k rows: within each head, the two halves of the rotated pairs interleaved
    (`LlamaModel.permute` in convert_hf_to_gguf.py). (heads * head_dim, in) -> the same shape."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _llama_tensor(name: str, tensor: Any, config: Any) -> Any:
    if name.endswith("q_proj.weight"):
        return _permute(tensor, config.num_attention_heads)
    if name.endswith("k_proj.weight"):
        return _permute(tensor, config.num_key_value_heads)
    return tensor


# ---- gemma3 ---------------------------------------------------------------------------------------------------------

GEMMA3_SWA_PATTERN = 6
"""Every 6th Gemma-3 layer attends globally, the others in a sliding window: llama.cpp's gemma3 assumes it."""
GEMMA3_LOCAL_THETA = 10000.0
"""The sliding layers' rotary base, which transformers' GGUF loader assumes (it reads only the global one)."""


def _gemma3_check(config: Any) -> list[str]:
    problems = []
    for kind in ("full_attention", "sliding_attention"):
        if _rope(config, kind).get("rope_type", "default") != "default":
            problems.append(f"rope_parameters.{kind}.rope_type={_rope(config, kind)['rope_type']!r}")
    if _rope(config, "sliding_attention").get("rope_theta", GEMMA3_LOCAL_THETA) != GEMMA3_LOCAL_THETA:
        problems.append(f"sliding layers' rope_theta {_rope(config, 'sliding_attention')['rope_theta']} "
                        f"(transformers' GGUF loader assumes {GEMMA3_LOCAL_THETA})")
    pattern = ["full_attention" if (i + 1) % GEMMA3_SWA_PATTERN == 0 else "sliding_attention"
               for i in range(config.num_hidden_layers)]
    if list(getattr(config, "layer_types", pattern)) != pattern:
        problems.append(f"layer_types other than one global layer in {GEMMA3_SWA_PATTERN}")
    if getattr(config, "query_pre_attn_scalar", _head_dim(config)) != _head_dim(config):
        problems.append(f"query_pre_attn_scalar {config.query_pre_attn_scalar} != head_dim {_head_dim(config)}")
    if getattr(config, "attn_logit_softcapping", None) is not None:
        problems.append("attn_logit_softcapping (removed in Gemma-3; llama.cpp's gemma3 has none)")
    if getattr(config, "use_bidirectional_attention", False):
        problems.append("use_bidirectional_attention=True")
    if getattr(config, "hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        problems.append(f"hidden_activation={config.hidden_activation!r}")
    return problems


def _gemma3_hparams(writer: Any, config: Any) -> None:
    _common_hparams(writer, config)
    writer.add_key_length(_head_dim(config))
    writer.add_value_length(_head_dim(config))
    writer.add_rope_freq_base(_rope(config, "full_attention").get("rope_theta", 1_000_000.0))
    # by key, not by gguf-py's add_rope_freq_base_swa, which older gguf releases lack
    writer.add_float32(f"{writer.arch}.rope.freq_base_swa",
                       _rope(config, "sliding_attention").get("rope_theta", GEMMA3_LOCAL_THETA))
    writer.add_sliding_window(config.sliding_window)
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(config.final_logit_softcapping)


def _gemma3_tensor(name: str, tensor: Any, config: Any) -> Any:
    # Gemma3RMSNorm computes x * (1 + w); llama.cpp's norm computes x * w.
    return tensor + 1 if name.endswith("norm.weight") else tensor


def _gemma_spm_token(token: str) -> tuple[str, int | None]:
    """Gemma's SentencePiece model holds runs of 2 to 31 spaces as user-defined pieces spelled with real spaces;
    transformers respells them with `▁` when it builds the tokenizer from a GGUF, and this undoes it."""
    if len(token) >= 2 and set(token) == {"▁"}:
        return " " * len(token), 4  # USER_DEFINED
    return token, None


ARCHS: dict[str, Arch] = {
    "llama": Arch("LLAMA", _llama_check, _llama_hparams, _llama_tensor),
    "gemma3_text": Arch("GEMMA3", _gemma3_check, _gemma3_hparams, _gemma3_tensor, _gemma_spm_token,
                        add_space_prefix=False),
}
"""transformers `config.model_type` -> how it is written."""


# ---- the file -------------------------------------------------------------------------------------------------------

@dataclass
class GGUFReport:
    path: Path
    modelfile: Path
    quant: str
    architecture: str
    tokenizer: str
    bytes: int = 0
    seconds: float = 0.0
    tensor_types: dict[str, int] = field(default_factory=dict)
    """How many tensors were written in each type (F32, F16, Q8_0)."""
    kept_f16: list[str] = field(default_factory=list)
    """Matrices left in float16 under q8_0 (rows not a whole number of 32-value blocks)."""

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(self.tensor_types.items()))
        kept = f"; {len(self.kept_f16)} kept in F16 (rows not in 32s)" if self.kept_f16 else ""
        return (f"{self.path} ({self.bytes / 1e6:.1f} MB, {self.architecture}, {self.quant}: {kinds}{kept}; "
                f"{self.seconds:.1f} s) and {self.modelfile.name}")


def check_arguments(out: str | Path, quant: str, force: bool = False) -> tuple[Path, Path]:
    """(the .gguf path, the Modelfile beside it), or an error naming the option: checked before a model is loaded."""
    if quant not in QUANTS:
        raise InputError(f"unknown quantisation {quant!r} (expected one of {', '.join(QUANTS)})", field="--quant")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ToolTuneError("--gguf needs the gguf package: pip install 'tooltune[gguf]'") from None
    out = Path(out)
    if out.suffix != ".gguf":
        raise InputError(f"{out}: the output file must end in .gguf", field="--gguf")
    modelfile = modelfile_path(out)
    for path in (out, modelfile):
        if path.is_dir():
            raise InputError(f"{path} is a directory", field="--gguf")
        if path.exists() and not force:
            raise InputError(f"{path} exists; pass --force to replace it", field="--gguf")
    return out, modelfile


def modelfile_path(out: Path) -> Path:
    """The Ollama Modelfile written beside `out`: `NAME.Modelfile`, so that exports in one folder keep theirs."""
    return out.with_suffix(".Modelfile")


def write_gguf(model: Any, tokenizer: Any, out: Path, quant: str, chat_template: str | None, name: str) -> GGUFReport:
    """Write `model` (a transformers causal LM) and `tokenizer` as `out` (a temporary path the caller renames)."""
    import gguf
    import numpy as np
    import torch

    config = model.config
    arch = ARCHS.get(config.model_type)
    if arch is None:
        raise ToolTuneError(f"architecture {config.model_type!r} cannot be exported to GGUF (supported: "
                            f"{', '.join(ARCHS)})")
    problems = arch.check(config)
    if problems:
        raise ToolTuneError(f"this {config.model_type} model differs from what llama.cpp computes: "
                            f"{'; '.join(problems)}")
    q = QUANTS[quant]
    model_arch = getattr(gguf.MODEL_ARCH, arch.gguf_arch, None)
    if model_arch is None:
        raise ToolTuneError(f"the installed gguf package is too old to write {arch.gguf_arch.lower()}: "
                            f"pip install -U gguf")
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[model_arch])
    writer.add_type("model")
    writer.add_name(name)
    writer.add_file_type(getattr(gguf.LlamaFileType, q.file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    arch.hparams(writer, config)
    rows = model.get_input_embeddings().weight.shape[0]
    report = GGUFReport(out, modelfile_path(out), quant, config.model_type,
                        write_tokenizer(writer, tokenizer, rows, arch.spm_token, arch.add_space_prefix))
    if chat_template:
        writer.add_chat_template(chat_template)
    names = gguf.get_tensor_name_map(model_arch, config.num_hidden_layers)
    matrix_type = getattr(gguf.GGMLQuantizationType, q.matrix_type)
    for hf_name, param in model.named_parameters():  # a tied lm_head is the embedding, listed once
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ToolTuneError(f"tensor {hf_name} has no llama.cpp name for {config.model_type}")
        with torch.no_grad():
            data = arch.tensor(hf_name, param.detach().to(torch.float32), config).numpy()
        qtype = matrix_type
        if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
            qtype = gguf.GGMLQuantizationType.F32
        try:
            packed = gguf.quants.quantize(data, qtype)
        except gguf.quants.QuantError:  # rows not a whole number of blocks: llama.cpp keeps them in float16
            qtype = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(data, qtype)
            report.kept_f16.append(gguf_name)
        writer.add_tensor(gguf_name, np.ascontiguousarray(packed), raw_dtype=qtype)
        report.tensor_types[qtype.name] = report.tensor_types.get(qtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return report


def modelfile_text(gguf_name: str, runtime: Any, note: str) -> str:
    """An Ollama Modelfile for the GGUF file `gguf_name` beside it, with the format's template, stops and system."""
    lines = [f"# Ollama: ollama create NAME -f {Path(gguf_name).with_suffix('.Modelfile').name}",
             *(f"# {line}" for line in note.splitlines()),
             f"FROM ./{gguf_name}"]
    if runtime.ollama is not None:
        if '"""' in runtime.ollama:
            raise ToolTuneError('the Ollama template holds """ and cannot be written in a Modelfile')
        lines.append(f'TEMPLATE """{runtime.ollama}"""')
    for stop in runtime.stops:
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    lines.append("PARAMETER temperature 0")
    if runtime.system:
        lines.append(f'SYSTEM """{runtime.system}"""')
    return "\n".join(lines) + "\n"


def export_gguf(run_dir: str | Path, out: str | Path, quant: str = "f16", base_path: str | None = None,
                force: bool = False) -> GGUFReport:
    """Merge `run_dir`'s adapter into its base and write `out` (.gguf) and its Modelfile; see the module's doc."""
    import torch

    out, modelfile = check_arguments(out, quant, force)
    run_dir = Path(run_dir)
    started = time.perf_counter()
    cfg = rundir.read_config(run_dir)
    if not cfg.data.format:
        raise InputError("the run names no chat format, so its GGUF would have no chat template",
                         where=str(run_dir / rundir.CONFIG), field="data.format")
    get_format(cfg.data.format)  # an unknown name is an error before the model is loaded
    model, tokenizer, cfg = merged_model(run_dir, base_path, dtype=torch.float32)
    fmt = get_format(cfg.data.format).for_tokenizer(tokenizer)
    tools, tools_from = run_tools(run_dir)
    runtime = runtime_for(fmt, tokenizer, tools)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = [_temporary_beside(p) for p in (out, modelfile)]
    try:
        report = write_gguf(model, tokenizer, partial[0], quant, runtime.jinja, run_dir.name)
        note = (f"Exported by tooltune from run {run_dir.name} (method {cfg.method.name}, format {fmt.name}, "
                f"observation {cfg.data.observation}; tools: {tools_from}).\n{runtime.exact}.\n"
                f"Tool results go in as `tool` messages holding the records' JSON as the run shows them "
                f"(observation {cfg.data.observation}).\nCalls come back as text in the format's own syntax: read "
                f"them with tooltune.formats.FORMATS[{fmt.name!r}].parse.")
        partial[1].write_text(modelfile_text(out.name, runtime, note), encoding="utf-8")
        os.replace(partial[0], out)
        os.replace(partial[1], modelfile)
    finally:
        for path in partial:
            path.unlink(missing_ok=True)
    report.path, report.modelfile = out, modelfile
    report.bytes, report.seconds = out.stat().st_size, time.perf_counter() - started
    return report


def _temporary_beside(path: Path) -> Path:
    """A new empty file beside `path` (same folder, so that the final rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # as an ordinary new file (mkstemp's is private): Ollama's server may read it
    return Path(name)


def run_tools(run_dir: Path) -> tuple[list[Any], str]:
    """(the tools of the run's first training dialogue, where they came from): what a chatglm3 or chat_template
    prompt shows when a client sends none. No tools when the training data is not here or its first line has none
    (the second item says so)."""
    try:
        path = training_data(run_dir)
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline() or "{}")
    except (ToolTuneError, OSError, ValueError):
        return [], "none (the training data named in config.yaml is not readable here)"
    tools = first.get("tools") if isinstance(first, dict) else None
    if not isinstance(tools, list):
        return [], f"none (the first line of {path.name} has no tools list)"
    try:
        found = [Tool.from_dict(t) for t in _tool_dicts(tools)]
    except (InputError, ValueError) as e:
        return [], f"none ({path.name}: {e})"
    return found, f"{len(found)} from the first line of {path.name}"


def _tool_dicts(items: list[Any]) -> list[Any]:
    """The tool objects of a dialogue file's `tools`: objects (OpenAI's `{"type": "function", "function": ...}` or
    the function itself) or JSON text holding one or a list (the course's chatglm3 files)."""
    out = []
    for item in items:
        item = json.loads(item) if isinstance(item, str) else item
        for tool in item if isinstance(item, list) else [item]:
            out.append(tool.get("function", tool) if isinstance(tool, dict) else tool)
    return out
