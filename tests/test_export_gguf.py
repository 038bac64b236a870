"""`tooltune export RUN --gguf OUT.gguf`: transformers loads the file back (`gguf_file=`) with the merged model's
logits within each quantisation's tolerance, the tokenizer encodes as the run's does, the chat template in the file
renders the run's format, the Modelfile is beside it; bad input is one error line and leaves nothing behind.

Tolerances, as max |logit difference| over the largest |logit| of the merged model (float32) on the same ids:
f16 within `TOLERANCE["f16"]` (weights rounded to 11 significant bits), q8_0 within `TOLERANCE["q8_0"]` (each block
of 32 weights shares one float16 scale over 8-bit integers). Measured: the tiny Llama here 3.6e-4 / 1.0e-2 (three
seeds); G7 over 190 positions of course prompts 7.6e-4 / 4.6e-2 (bench/results/export_gguf.md).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from tooltune.cli import main
from tooltune.formats import FORMATS, get_format
from tooltune.formats.base import BOS, EOS
from tooltune.formats.runtimes import RUNTIMES, messages, runtime_for
from tooltune.train.config import config_from_dict, config_to_dict
from tooltune.train.export import merged_model
from tooltune.train.loop import run_training
from tooltune.train.tiny import save_tiny_model, synthetic_examples, tiny_tokenizer

TOLERANCE = {"f16": 2e-3, "q8_0": 1e-1}
"""Largest allowed max |Δlogit| / max |logit| per quantisation (see the module's doc; docs/ and README say the same)."""

VOCAB = 400

SAMPLES = ["hotel near the station with breakfast", "找一家有早餐的酒店，价格300元以下", "  two  spaces\nand a line",
           "<s> the </s> special tokens", "rating 4.5 stars, 1234 yuan"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny Llama trained 3 steps with LoRA, chat format llama2; its byte-level BPE has merges (at the default 200
    ids the 256 bytes leave room for none, and llama.cpp cannot load a BPE without merges)."""
    root = tmp_path_factory.mktemp("gguf")
    model_dir = save_tiny_model(root / "model", vocab_size=VOCAB)
    tokenizer = tiny_tokenizer(vocab_size=VOCAB)
    cfg = config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": "lora"},
                            "data": {"format": "llama2", "observation": "compact"},
                            "train": {"out": str(root / "run"), "max_steps": 3, "batch_size": 4, "lr": 2e-2}})
    run_training(cfg, AutoModelForCausalLM.from_pretrained(model_dir), tokenizer,
                 synthetic_examples(8, len(tokenizer)), [])
    return root / "run"


@pytest.fixture(scope="module")
def merged(run):
    model, tokenizer, _ = merged_model(run, dtype=torch.float32)
    return model.eval(), tokenizer


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_transformers_loads_the_gguf_with_the_merged_models_logits(run, merged, tmp_path, quant, capsys):
    out = tmp_path / f"tiny-{quant}.gguf"
    assert main(["export", str(run), "--gguf", str(out), "--quant", quant]) == 0
    assert f"written: {out}" in capsys.readouterr().out
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    model, tokenizer = merged
    ids = torch.tensor([tokenizer.encode(" ".join(SAMPLES))])
    with torch.no_grad():
        got, want = loaded(input_ids=ids).logits, model(input_ids=ids).logits
    error = relative_error(got, want)
    assert error <= TOLERANCE[quant], error
    assert error > 0  # the file holds rounded weights, not the float32 ones

    from gguf import GGUFReader

    types = {t.name: t.tensor_type.name for t in GGUFReader(out).tensors}
    assert types["output_norm.weight"] == "F32" and types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == types["output.weight"] == quant.upper()


def test_q8_0_is_smaller_than_f16(run, tmp_path):
    for quant in ("f16", "q8_0"):
        assert main(["export", str(run), "--gguf", str(tmp_path / f"m-{quant}.gguf"), "--quant", quant]) == 0
    assert (tmp_path / "m-q8_0.gguf").stat().st_size < (tmp_path / "m-f16.gguf").stat().st_size


def test_the_tokenizer_and_the_chat_template_come_back_from_the_file(run, merged, tmp_path):
    out = tmp_path / "tiny.gguf"
    assert main(["export", str(run), "--gguf", str(out)]) == 0
    _, tokenizer = merged
    loaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    for text in SAMPLES:
        assert loaded.encode(text) == tokenizer.encode(text), text
        assert loaded.decode(loaded.encode(text)) == text
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")

    from gguf import GGUFReader

    fields = GGUFReader(out).fields
    template = fields["tokenizer.chat_template"].contents()
    fmt = get_format("llama2").for_tokenizer(tokenizer)
    assert template == runtime_for(fmt, tokenizer).jinja == loaded.chat_template
    assert fields["tokenizer.ggml.model"].contents() == "gpt2" and fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    dialogue = _dialogue()
    for k in _prompt_ends(dialogue.turns):
        want = _text(fmt.prompt(dialogue.turns[:k], dialogue.tools, observation="compact"), tokenizer)
        got = loaded.apply_chat_template(messages(dialogue.turns[:k], "compact", indent=4), tokenize=False)
        assert got == want


def test_the_modelfile_is_beside_the_gguf(run, tmp_path):
    out = tmp_path / "bot.gguf"
    assert main(["export", str(run), "--gguf", str(out)]) == 0
    text = (tmp_path / "bot.Modelfile").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert "FROM ./bot.gguf" in lines and 'PARAMETER stop "[Round"' in lines and "PARAMETER temperature 0" in lines
    assert 'TEMPLATE """' in text and "[Round {{ len $r }}]" in text and "</s>" in text
    assert "SYSTEM" not in text  # llama2 has no tool description in its prompt
    assert "format llama2" in text and "observation compact" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bot.Modelfile", "bot.gguf"]  # no temporary left
    probe = tmp_path / "probe"
    probe.write_text("")  # what any new file gets here: Ollama's server (another user) must be able to read the file
    assert {stat.S_IMODE(p.stat().st_mode) for p in (out, tmp_path / "bot.Modelfile", probe)} == \
        {stat.S_IMODE(probe.stat().st_mode)}


def test_the_runs_tools_come_from_its_training_data(tmp_path, course_dir):
    """The course's chatglm3 files hold the tools as one JSON string: read as the hotel tool."""
    from tooltune.dialogue import HOTEL_TOOL
    from tooltune.train.gguf_export import run_tools

    run = tmp_path / "run"
    run.mkdir()
    tree = config_to_dict(config_from_dict({"data": {"format": "chatglm3",
                                                     "train": str(course_dir / "train.chatglm3.jsonl")}}))
    (run / "config.yaml").write_text(yaml.safe_dump(tree))
    tools, where = run_tools(run)
    assert tools == [HOTEL_TOOL] and where == "1 from the first line of train.chatglm3.jsonl"
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config_from_dict({"data": {"train": "nope"}}))))
    assert run_tools(run) == ([], "none (the training data named in config.yaml is not readable here)")


# ---- every format's templates render its prompts -------------------------------------------------------------------

def _dialogue():
    from formats_support import tiny_dialogue

    from tooltune.dialogue import HOTEL_TOOL, Dialogue

    return Dialogue(tiny_dialogue().turns, tools=(HOTEL_TOOL,))


def _prompt_ends(turns) -> list[int]:
    from tooltune.dialogue import Result, User

    return [k for k in range(1, len(turns) + 1) if isinstance(turns[k - 1], (User, Result))]


def _text(segments, tokenizer) -> str:
    from tooltune.formats.runtimes import special_text

    bos, eos = special_text(tokenizer)
    return "".join(bos if s.special and s.text == BOS else eos if s.special and s.text == EOS else s.text
                   for s in segments)


def _plain_repr(turn) -> bool:
    """Whether each string argument of a call is its Python repr between single quotes (no quote, no escape)."""
    args = getattr(turn, "arguments", {})
    return all(repr(v) == f"'{v}'" for v in args.values() if isinstance(v, str))


def test_every_format_has_runtime_templates():
    assert set(RUNTIMES) == set(FORMATS)


@pytest.mark.parametrize("name", ["llama2", "chatglm2", "chatglm3"])
@pytest.mark.parametrize("system", ["", "Answer in Chinese."])
def test_the_jinja_template_renders_the_formats_prompt(name, system, data_root):
    """transformers renders the exported template to the format's prompt text, turn by turn, with and without a
    system message, on the tiny dialogue (quotes, floats, lists, an unanswered call) and course dialogues."""
    from formats_support import byte_bpe, corpus, seed_dialogues
    from transformers.utils.chat_template_utils import render_jinja_template

    dialogues = [_dialogue()] + seed_dialogues(data_root, limit=20)
    tokenizer = byte_bpe(corpus(dialogues))
    fmt = FORMATS[name].for_tokenizer(tokenizer)
    runtime = runtime_for(fmt, tokenizer, dialogues[0].tools)
    tools = [{"type": "function", "function": t.to_dict()} for t in dialogues[0].tools]
    checked = 0
    for dialogue in dialogues:
        for k in _prompt_ends(dialogue.turns):
            turns = dialogue.turns[:k]
            if name == "chatglm3" and not all(_plain_repr(t) for t in turns):
                continue  # a string the Python repr escapes: see formats/runtimes.py
            want = _text(fmt.system_prompt(turns, dialogue.tools, system, observation="full"), tokenizer)
            chat = messages(turns, "full", system, runtime.result_indent)
            rendered, _ = render_jinja_template(conversations=[chat], tools=tools,
                                                chat_template=runtime.jinja, add_generation_prompt=True,
                                                bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
            assert rendered[0] == want, (dialogue.id, k)
            checked += 1
    assert checked > 50


CALL_ARGUMENTS = {"llama2": r"search:\n\{.*?\}(?=</s>|<\|endoftext\|>)", "chatglm2": r"search_hotels\n\{.*?\}(?=\n)",
                  "chatglm3": r"tool_call\(.*?\)(?=\n```)"}
"""Where each format writes a call's arguments: Ollama's template writes them as Go's `json` does instead."""


@pytest.mark.parametrize("name", sorted(CALL_ARGUMENTS))
def test_the_ollama_template_renders_the_formats_prompt_but_for_call_arguments(name, data_root, tmp_path):
    """Go's text/template (with Ollama's `json`, bench/ollama_template.go) renders the Modelfile's TEMPLATE to the
    format's prompt without its bos (Ollama adds it), except for the call arguments written in the history."""
    import re
    import shutil
    import subprocess

    from formats_support import byte_bpe, corpus, seed_dialogues

    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain (apt-get install golang-go; .ci/run installs it)")
    binary = tmp_path / "ollama_template"
    subprocess.run([go, "build", "-o", str(binary), str(Path(__file__).parents[1] / "bench" / "ollama_template.go")],
                   check=True, cwd=tmp_path, env={**__import__("os").environ, "GOCACHE": str(tmp_path / "cache"),
                                                  "GOPATH": str(tmp_path / "gopath"), "GO111MODULE": "off"})
    dialogues = [_dialogue()] + seed_dialogues(data_root, limit=10)
    tokenizer = byte_bpe(corpus(dialogues))
    fmt = FORMATS[name].for_tokenizer(tokenizer)
    runtime = runtime_for(fmt, tokenizer, dialogues[0].tools)
    chats, wants = [], []
    for dialogue in dialogues:
        for k in _prompt_ends(dialogue.turns):
            chats.append(messages(dialogue.turns[:k], "full", indent=runtime.result_indent))
            wants.append(_text(fmt.prompt(dialogue.turns[:k], dialogue.tools, observation="full"), tokenizer))
    done = subprocess.run([str(binary)], input=json.dumps({"template": runtime.ollama, "conversations": chats}),
                          capture_output=True, text=True, check=True)
    rendered = json.loads(done.stdout)
    assert len(rendered) == len(wants) > 20

    def blank(text: str) -> str:
        return re.sub(CALL_ARGUMENTS[name], "ARGUMENTS", text, flags=re.S)

    assert [blank(t) for t in rendered] == [blank(t) for t in wants]
    plain = [i for i, chat in enumerate(chats) if not any("tool_calls" in m for m in chat)]
    assert plain and all(rendered[i] == wants[i] for i in plain)  # no call in the history: exact


def test_a_chat_template_run_writes_the_tokenizers_template_and_the_tool_instruction_as_system():
    from formats_support import GEMMA_LIKE, byte_bpe, corpus, with_template

    from tooltune.formats.chat_template import TOOL_INSTRUCTION

    dialogue = _dialogue()
    tokenizer = with_template(byte_bpe(corpus([dialogue])), GEMMA_LIKE, ["<start_of_turn>", "<end_of_turn>"])
    runtime = runtime_for(FORMATS["chat_template"], tokenizer, dialogue.tools)
    assert runtime.jinja == GEMMA_LIKE and runtime.ollama is None
    assert runtime.system.startswith(TOOL_INSTRUCTION) and "search_hotels" in runtime.system
    assert runtime.stops == ("<end_of_turn>",)


# ---- bad input -----------------------------------------------------------------------------------------------------

def _run_without_adapter(tmp_path: Path, model_dir: Path) -> Path:
    bare = tmp_path / "bare"
    bare.mkdir()
    tree = config_to_dict(config_from_dict({"model": {"path": str(model_dir)}, "method": {"name": "lora"},
                                            "data": {"format": "llama2"}}))
    (bare / "config.yaml").write_text(yaml.safe_dump(tree))
    return bare


@pytest.mark.parametrize("case", ["quant", "suffix", "exists", "no adapter", "no format", "quant without gguf",
                                  "base"])
def test_bad_input_is_one_error_line_and_nothing_is_written(run, tmp_path, capsys, case):
    out = tmp_path / "out" / "m.gguf"
    argv, needle = ["export", str(run), "--gguf", str(out)], None
    if case == "quant":
        argv, needle = argv + ["--quant", "q4_k"], "--quant: unknown quantisation 'q4_k' (expected one of f16, q8_0)"
    elif case == "suffix":
        argv, needle = ["export", str(run), "--gguf", str(tmp_path / "out" / "m.bin")], "must end in .gguf"
    elif case == "exists":
        out.parent.mkdir()
        out.write_bytes(b"keep")
        needle = "m.gguf exists; pass --force to replace it"
    elif case == "no adapter":
        argv[1], needle = str(_run_without_adapter(tmp_path, run.parent / "model")), "no adapter_model.safetensors"
    elif case == "no format":
        bare = _run_without_adapter(tmp_path, run.parent / "model")
        (bare / "config.yaml").write_text((bare / "config.yaml").read_text().replace("format: llama2", "format: ''"))
        for path in run.iterdir():
            if path.name.startswith("adapter_"):
                (bare / path.name).write_bytes(path.read_bytes())
        argv[1], needle = str(bare), "data.format: the run names no chat format"
    elif case == "base":
        argv, needle = argv + ["--base", str(tmp_path / "nowhere")], "nowhere' is not a model folder here"
    else:
        argv, needle = ["export", str(run), "--merge", str(tmp_path / "out"), "--quant", "q8_0"], "--quant goes with"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tooltune: error: ") and err.count("\n") == 1 and needle in err, err
    left = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert left == (["m.gguf"] if case == "exists" else [])
    if case == "exists":
        assert out.read_bytes() == b"keep"
        assert main(argv + ["--force"]) == 0 and out.stat().st_size > 1000
        assert (out.parent / "m.Modelfile").is_file()


def test_an_architecture_llama_cpp_is_not_given_is_refused_by_name(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tooltune.errors import ToolTuneError
    from tooltune.train.gguf_export import write_gguf

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=200))
    with pytest.raises(ToolTuneError, match=r"architecture 'gpt2' cannot be exported to GGUF \(supported: llama, "
                                            r"gemma3_text\)"):
        write_gguf(model, tiny_tokenizer(), tmp_path / "m.gguf", "f16", None, "x")
    assert not (tmp_path / "m.gguf").exists()


def test_a_llama_that_llama_cpp_would_compute_differently_is_refused(tmp_path):
    from tooltune.errors import ToolTuneError
    from tooltune.train.gguf_export import write_gguf
    from tooltune.train.tiny import tiny_llama

    model = tiny_llama(200, attention_bias=True)
    with pytest.raises(ToolTuneError, match="attention_bias=True"):
        write_gguf(model, tiny_tokenizer(), tmp_path / "m.gguf", "f16", None, "x")



def test_a_byte_level_bpe_without_merges_is_refused(tmp_path):
    """200 ids leave the 256 bytes no room for a merge: llama.cpp refuses such a BPE, so the export does first."""
    from tooltune.errors import ToolTuneError
    from tooltune.train.gguf_export import write_gguf
    from tooltune.train.tiny import tiny_llama

    tokenizer = tiny_tokenizer()
    with pytest.raises(ToolTuneError, match="byte-level BPE without merges"):
        write_gguf(tiny_llama(len(tokenizer)), tokenizer, tmp_path / "m.gguf", "f16", None, "x")

# ---- the product's base: Gemma-3-270M, run G7 ----------------------------------------------------------------------

G7 = Path(__file__).parents[1] / "bench" / "artifacts" / "g7"


def test_g7_exports_to_q8_0_with_the_merged_models_logits_and_the_bases_own_vocabulary(gemma_base, tmp_path):
    """Run G7 (Gemma-3-270M + LoRA, format llama2): transformers reads the q8_0 file back within the q8_0 tolerance
    on a course prompt, and the tokenizer metadata is what llama.cpp's converter wrote into the GGUF the base was
    prepared from (tokens, types, ids, flags; the normal pieces' scores in the same order)."""
    from tooltune.train.gguf_vocab import compare_vocab

    out = tmp_path / "g7-q8_0.gguf"
    assert main(["export", str(G7), "--gguf", str(out), "--quant", "q8_0"]) == 0
    model, tokenizer, _ = merged_model(G7, dtype=torch.float32)
    fmt = get_format("llama2").for_tokenizer(tokenizer)
    dialogue = _dialogue()
    ids = torch.tensor([tokenizer(_text(fmt.prompt(dialogue.turns[:3], dialogue.tools, observation="compact"),
                                       tokenizer), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        want = model.eval()(input_ids=ids, logits_to_keep=8).logits
    del model
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
    with torch.no_grad():
        got = loaded(input_ids=ids, logits_to_keep=8).logits
    assert relative_error(got, want) <= TOLERANCE["q8_0"], relative_error(got, want)

    source = Path(json.loads((gemma_base / "tooltune-prepared.json").read_text(encoding="utf-8"))["source"])
    if source.is_file():  # where `model prepare` ran here (CI: yes)
        verdicts = compare_vocab(source, out)
        assert verdicts.pop("tokenizer.ggml.scores").startswith("same order"), verdicts
        assert all(v in ("same", "absent from both") for v in verdicts.values()), verdicts
    text = (tmp_path / "g7-q8_0.Modelfile").read_text(encoding="utf-8")
    assert "<eos>\n\n" in text and "FROM ./g7-q8_0.gguf" in text
