"""Drawn turns and the minimum-Bayes-risk choice among them (`GenerationConfig.temperature/samples`, `tooltune.mbr`):
agreement is the course's own scoring between candidates, the choice is the consensus, draws are repeatable under a
seed and leave torch's global generator alone, and greedy decoding is what it was."""

import pytest
import torch
from bot_support import tiny_llama, tokenizer_for
from formats_support import tiny_dialogue

import tooltune.inference as inference
from tooltune.cli import main
from tooltune.dialogue import Assistant, Call
from tooltune.errors import InputError
from tooltune.evaluate.metrics import char_bleu4
from tooltune.inference import GenerationConfig, Generator
from tooltune.mbr import agreement, choose


def test_agreement_scores_a_candidate_as_the_course_would_against_the_other():
    a, b = Assistant("推荐您去北京亚奥国际酒店，价格是500元。"), Assistant("推荐您去北京亚奥国际酒店。")
    assert agreement(a, b) == pytest.approx(char_bleu4(a.content, b.content))
    assert agreement(a, b) != pytest.approx(agreement(b, a))  # BLEU is not symmetric; the reference is the 2nd
    assert agreement(a, a) == pytest.approx(1.0)
    call = Call({"type": "经济型", "facilities": ["wifi", "SPA"]})
    # 2 of 3 predicted slots right, 2 of 2 gold ones found: P 2/3, R 1, F1 0.8
    assert agreement(call, Call({"type": "经济型", "facilities": ["wifi"]})) == pytest.approx(0.8)
    assert agreement(Call({}), Call({})) == 1.0
    assert agreement(call, a) == agreement(a, call) == 0.0
    assert agreement(call, Call(dict(call.arguments), name="search_flights")) == 0.0


def test_choose_takes_the_consensus_and_votes_on_the_turn_type():
    replies = [Assistant("这家酒店有wifi。"), Assistant("有的，这家酒店提供免费wifi。"),
               Assistant("L.W.G.F.C.S. 100,200"), Assistant("这家酒店提供免费wifi。")]
    assert choose(replies) == 3  # the draw closest to the others, not the first and not the outlier
    calls = [Call({"type": "经济型", "price_range_upper": 300}), Call({"type": "舒适型"}),
             Call({"type": "经济型", "price_range_upper": 300}), Assistant("好的")]
    assert choose(calls) == 0  # two identical calls outvote a different call and a reply; the earlier one wins
    assert choose([Assistant("好的"), Call({"type": "经济型"}), Call({"type": "经济型"})]) == 1
    assert choose([Assistant("好的")]) == 0
    with pytest.raises(ValueError):
        choose([])


def _generator(**options):
    fmt, tok = tokenizer_for("llama2")
    model = tiny_llama(len(tok))
    return Generator(model, tok, fmt, config=GenerationConfig(max_new_tokens=12, **options))


HISTORIES = [tiny_dialogue().turns[:1], tiny_dialogue().turns[:3]]


def test_samples_choose_among_the_greedy_turn_and_the_draws(monkeypatch):
    greedy = _generator().predict(HISTORIES)
    seen = []
    original = inference.choose

    def recording(candidates):
        index = original(candidates)
        seen.append((list(candidates), index))
        return index

    monkeypatch.setattr(inference, "choose", recording)
    preds = _generator(samples=4, temperature=1.5, seed=0).predict(HISTORIES)
    assert len(seen) == len(HISTORIES)  # one choice per history (one batch, in order of prompt length)
    by_first = {tuple(map(repr, c[:1])): (c, i) for c, i in seen}
    for pred, plain in zip(preds, greedy):
        candidates, index = by_first[(repr(plain.parsed.turn),)]  # the greedy turn is the first candidate
        assert len(candidates) == 4
        assert pred.parsed.turn == candidates[index]
    assert any(len({repr(t) for t in c}) > 1 for c, _ in seen)  # the draws are not all the greedy turn


def test_draws_repeat_under_a_seed_and_leave_the_global_generator_alone():
    generator = _generator(temperature=1.5, seed=7)  # building the tiny model seeds torch itself
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = [p.raw for p in generator.predict(HISTORIES)]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert [p.raw for p in _generator(temperature=1.5, seed=7).predict(HISTORIES)] == first
    others = {tuple(p.raw for p in _generator(temperature=1.5, seed=s).predict(HISTORIES)) for s in range(4)}
    assert len(others) > 1  # another seed, other draws
    assert [p.raw for p in _generator(temperature=0.0).predict(HISTORIES)] == \
        [p.raw for p in _generator().predict(HISTORIES)]


@pytest.mark.parametrize("options, field", [
    (dict(samples=2), "temperature"),  # several samples need something to draw them with
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(samples=0), "samples"),
])
def test_settings_that_cannot_work_are_refused_naming_the_field(options, field):
    with pytest.raises(InputError) as caught:
        GenerationConfig(**options)
    assert caught.value.field == field


def test_eval_refuses_samples_without_a_temperature_before_loading(tmp_path, capsys):
    data = tmp_path / "dev.jsonl"
    data.write_text('{"tools": [], "conversations": [{"role": "user", "content": "有酒店吗"}, '
                    '{"role": "assistant", "content": "有"}]}\n', encoding="utf-8")
    code = main(["eval", str(tmp_path / "no-such-run"), "--data", str(data), "--out", str(tmp_path / "e"),
                 "--samples", "3", "--temperature", "0"])
    assert code == 2
    assert "temperature" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_draws_continue_from_the_shared_prompt_cache_as_a_whole_generation_would(monkeypatch):
    """Draws read each prompt once and continue from copies of its cache: at top-k 1 every draw must then be the
    greedy turn itself, padding and positions included (the histories differ in length)."""
    greedy = [p.raw for p in _generator().predict(HISTORIES)]
    seen = []
    original = inference.choose
    monkeypatch.setattr(inference, "choose", lambda c: seen.append(list(c)) or original(c))
    drawn = _generator(samples=3, temperature=1.0, top_k=1, seed=0).predict(HISTORIES)
    assert [p.raw for p in drawn] == greedy
    assert len(seen) == 2 and all(len(set(map(repr, c))) == 1 for c in seen)
