"""The restricted output layer (`GenerationConfig.output_vocab`, `tooltune eval --domain-vocab`): within the allowed
ids it computes what the whole head computes, it never lets another id win, and it leaves the model as it was."""

import json
from pathlib import Path

import torch
from bot_support import tiny_llama, tokenizer_for
from formats_support import tiny_dialogue
from vocab_support import outside, record_generation, rendered_ids, run_vocabulary

from tooltune.cli import main
from tooltune.inference import (
    GenerationConfig,
    Generator,
    SubsetHead,
    domain_vocab,
    restricted_head,
)


def _prompt(gen):
    return torch.tensor([gen.prompt_ids(tiny_dialogue().turns[:1])])


def _record_first_row(model) -> list[int]:
    """The ids `model.generate` writes in its first row, filled in as it runs."""
    seen: list[int] = []
    original = model.generate

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.extend(out[0, kwargs["input_ids"].shape[1]:].tolist())
        return out

    model.generate = recording
    return seen


def test_a_vocabulary_of_every_id_changes_nothing_and_the_head_comes_back():
    fmt, tok = tokenizer_for("llama2")
    model = tiny_llama(len(tok))
    history = [tiny_dialogue().turns[:1], tiny_dialogue().turns[:3]]
    whole = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=24)).predict(history)
    head = model.get_output_embeddings()
    every = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=24,
                                                                output_vocab=frozenset(range(len(tok)))))
    same = every.predict(history)
    assert [(p.raw, p.new_tokens) for p in same] == [(p.raw, p.new_tokens) for p in whole]
    assert all(p.new_tokens > 0 for p in whole)
    assert model.get_output_embeddings() is head


def test_logits_of_allowed_ids_are_the_whole_heads_and_no_other_id_can_win():
    fmt, tok = tokenizer_for("llama2")
    model = tiny_llama(len(tok))
    gen = Generator(model, tok, fmt)
    x = _prompt(gen)
    with torch.no_grad():
        full = model(x).logits[0, -1]
        allowed = set(full.topk(40, largest=False).indices.tolist())  # the 40 least likely: never the argmax
        with restricted_head(model, allowed):
            assert isinstance(model.get_output_embeddings(), SubsetHead)
            restricted = model(x).logits[0, -1]
    ids = torch.tensor(sorted(allowed))
    torch.testing.assert_close(restricted[ids], full[ids], rtol=1e-5, atol=1e-5)
    assert restricted.argmax().item() in allowed and full.argmax().item() not in allowed
    others = torch.ones_like(full, dtype=torch.bool)
    others[ids] = False
    assert (restricted[others] == torch.finfo(restricted.dtype).min).all()


def test_generation_writes_only_allowed_or_prompt_ids():
    fmt, tok = tokenizer_for("llama2")
    model = tiny_llama(len(tok))
    end = tok.eos_token_id
    allowed = frozenset(range(40, 80))
    gen = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=16, output_vocab=allowed))
    prompt = gen.prompt_ids(tiny_dialogue().turns[:1])
    seen = _record_first_row(model)
    gen.predict([tiny_dialogue().turns[:1]])
    assert seen and set(seen) <= allowed | set(prompt) | {end}
    assert not set(seen) <= set(prompt)  # the allowed ids are really used, not only the prompt's


def test_padding_is_never_generated_even_where_the_model_prefers_it():
    """An untrained prompt adapter or a base model can put its top logit on <pad> and fill the length limit with it;
    the generator never emits it, with the whole head or a restricted one (finished rows are still padded)."""
    fmt, tok = tokenizer_for("llama2")
    tok.pad_token = "<pad>" if "<pad>" in tok.get_vocab() else tok.convert_ids_to_tokens(3)
    model = tiny_llama(len(tok))
    pad = tok.pad_token_id
    assert pad != tok.eos_token_id

    def prefer_pad(module, args, output):
        output.logits[..., pad] += 1e4
        return output

    model.register_forward_hook(prefer_pad)
    with torch.no_grad():
        assert model(_prompt(Generator(model, tok, fmt))).logits[0, -1].argmax().item() == pad
    history = [tiny_dialogue().turns[:1], tiny_dialogue().turns[:3]]
    for vocab in (None, frozenset(range(len(tok)))):
        gen = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=12, output_vocab=vocab))
        for pred in gen.predict(history):
            assert pred.new_tokens > 0 and tok.pad_token not in pred.raw, pred.raw


def test_a_turn_ended_by_a_stop_string_the_prompt_began_is_empty_and_its_batch_padding_is_cut():
    """llama2 prompts end in two newlines, so a model that writes "[Round" at once has ended its turn (the stop string
    "\\n\\n[Round" straddles prompt and answer); `generate` then pads the row while the batch goes on. The answer
    is empty, with no marker and no padding in it."""
    from bot_support import ScriptedLM

    fmt, tok = tokenizer_for("llama2")
    tok.add_special_tokens({"pad_token": "<pad>"})
    history = tiny_dialogue().turns[:3]  # ... a call and its result: the prompt ends with "\n\n"
    model = ScriptedLM([tok.encode("[Round", add_special_tokens=False) + [tok.pad_token_id] * 5])
    gen = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=8))
    assert tok.decode(gen.prompt_ids(history)).endswith("\n\n")
    [pred] = gen.predict([history])
    assert pred.raw == "" and pred.parsed.turn.content == ""
    # A reply that only mentions a round is kept: the stop string must continue the prompt's own tail.
    model.scripts.append(tok.encode("Round 2 好的", add_special_tokens=False) + [tok.pad_token_id])
    [pred] = gen.predict([history])
    assert pred.raw == "Round 2 好的"


def test_a_wrapped_head_is_restricted_as_it_computes():
    """LoRA on lm_head: the restricted head uses the adapter's effective weights, not the bare base weights."""
    from peft import LoraConfig, get_peft_model

    fmt, tok = tokenizer_for("llama2")
    model = get_peft_model(tiny_llama(len(tok)), LoraConfig(r=4, target_modules=["lm_head"], init_lora_weights=False))
    model.eval()
    gen = Generator(model, tok, fmt)
    x = _prompt(gen)
    allowed = set(range(0, len(tok), 3))
    ids = torch.tensor(sorted(allowed))
    with torch.no_grad():
        full = model(input_ids=x).logits[0, -1]
        with model.disable_adapter():
            bare = model(input_ids=x).logits[0, -1]
        with restricted_head(model, allowed):
            restricted = model(input_ids=x).logits[0, -1]
    assert not torch.allclose(full[ids], bare[ids], atol=1e-4)  # the adapter matters
    torch.testing.assert_close(restricted[ids], full[ids], rtol=1e-5, atol=1e-5)


def test_a_head_with_a_bias_is_restricted_with_its_bias():
    """A head with a bias (some models have one; an adapter can add one): the restricted logits keep it."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True)
    torch.nn.init.normal_(head.bias, std=5.0)  # large next to the weights' part: leaving it out changes the logits
    ids = {1, 7, 20, 49}
    hidden = torch.randn(3, 16)
    with torch.no_grad():
        want, got = head(hidden), SubsetHead(head, ids)(hidden)
    index = torch.tensor(sorted(ids))
    torch.testing.assert_close(got[:, index], want[:, index], rtol=1e-5, atol=1e-5)
    assert got[:, index].argmax(-1).tolist() == want[:, index].argmax(-1).tolist()


def test_an_id_of_the_prompt_may_be_generated_though_not_in_the_vocabulary():
    """A hotel name returned by the search is in the prompt but maybe in no training dialogue: the generator allows
    the prompt's own ids beside the vocabulary, so the model can copy it."""
    fmt, tok = tokenizer_for("llama2")
    model = tiny_llama(len(tok))
    allowed = frozenset(range(40, 80))
    gen = Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=4, output_vocab=allowed))
    history = tiny_dialogue().turns[:1]
    prompt = gen.prompt_ids(history)
    copy = next(i for i in prompt if i not in allowed and i != tok.eos_token_id and i > 5)

    def prefer_copy(module, args, output):  # the model wants the prompt id most
        output.logits[..., copy] += 1e4
        return output

    model.register_forward_hook(prefer_copy)
    seen = _record_first_row(model)
    gen.predict([history])
    assert seen[0] == copy


def test_domain_vocab_holds_every_id_of_the_rendered_dialogues():
    fmt, tok = tokenizer_for("llama2")
    dialogue = tiny_dialogue()
    vocab = domain_vocab([dialogue], tok, fmt, "compact")
    assert vocab == rendered_ids([dialogue], tok, "llama2", "compact") and len(vocab) < len(tok)
    # By hand: the words of the dialogue are in, a word the tokenizer knows from elsewhere is not, and compact
    # results leave out the fields the model does not use (hotel_id, phone).
    ids = lambda text: set(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert ids("豪华型") <= vocab and ids("推荐甲酒店。") <= vocab and tok.eos_token_id in vocab
    assert not ids("北京") <= vocab and not ids("评分") <= vocab
    assert ids("hotel_id") - domain_vocab([dialogue], tok, fmt, "compact") and ids("hotel_id") <= domain_vocab(
        [dialogue], tok, fmt, "full")
    # Every dialogue counts, not only the first: a second one with other words adds them.
    from dataclasses import replace

    from tooltune.dialogue import User

    other = replace(dialogue, turns=(User("北京评分"), *dialogue.turns[1:]))
    assert ids("北京") <= domain_vocab([dialogue, other], tok, fmt, "compact")
    assert ids("北京") <= domain_vocab([other, dialogue], tok, fmt, "compact")


def test_eval_with_domain_vocab(tmp_path, course_dir, monkeypatch):
    from tooltune.datafiles import read_dialogues, write_dialogues
    from tooltune.train.tiny import save_tiny_model

    data = tmp_path / "few.jsonl"
    write_dialogues(read_dialogues(course_dir / "test.chatglm3.jsonl")[:2], data, "seed")
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    run = tmp_path / "run"
    assert main(["train", str(Path(__file__).parents[1] / "configs" / "lora.yaml"), f"model.path={model_dir}",
                 "model.dtype=float32", "train.mixed_precision=no", "data.format=llama2", f"data.train={data}",
                 "data.dev=", "data.max_length=1024", "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1",
                 "train.eval_every=0", "train.save_every=0", "train.warmup_steps=0", f"train.out={run}"]) == 0
    generated = record_generation(monkeypatch)
    rows = {}
    for flag, name in (([], "whole"), (["--domain-vocab"], "domain")):
        generated.clear()
        assert main(["eval", str(run), "--data", str(data), "--out", str(tmp_path / name), "--limit", "4",
                     "--max-new-tokens", "8", "--no-task-success", *flag]) == 0
        rows[name] = list(generated)
    whole, domain = (json.loads((tmp_path / n / "metrics.json").read_text(encoding="utf-8")) for n in ("whole", "domain"))
    assert whole["output_vocab"] == "all" and str(data) in domain["output_vocab"]
    # What was generated: with --domain-vocab only ids of the training file, of the row's prompt, or eos; the whole
    # vocabulary (the same model and prompts) does write other ids, so the restriction is what kept them out.
    allowed, tok = run_vocabulary(run)
    allowed.add(tok.eos_token_id)
    assert len(rows["whole"]) == len(rows["domain"]) == 4
    assert any(outside(rows["whole"], allowed)) and not any(outside(rows["domain"], allowed))
    assert any(new for _, new in rows["domain"])


def test_domain_vocab_needs_the_runs_training_data(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data:\n  train: nowhere/train.jsonl\n", encoding="utf-8")
    assert main(["eval", str(run), "--data", "x.jsonl", "--out", str(tmp_path / "o"), "--domain-vocab"]) == 2
    err = capsys.readouterr().err
    assert "data.train" in err and "nowhere/train.jsonl" in err
