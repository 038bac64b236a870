"""`tooltune data feedback export`: stored conversations -> training dialogues (read back, trained on a tiny model),
their labels, annotation tasks (merged back by `data merge-annotations`), the report; bad input is one line, exit 2."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tooltune.dataset.clean import normalise
from tooltune.dataset.exclude import user_texts
from tooltune.cli import main
from tooltune.dialogue import Assistant, Call, Result, User, dialogue_to_seed
from tooltune.feedback import Correction, FeedbackStore, read_conversations
from tooltune.datafiles import read_dialogues

A, B, B2, D, E = ("帮我找一家评分4.5以上的经济型酒店", "我想住豪华型的酒店", "价格在500元以内的呢",
                  "有没有舒适型的酒店推荐", "三百元以内的经济型酒店有哪些")
HOTELS = [{"name": "如家酒店", "type": "经济型", "price": 288.0, "rating": 4.6}]
LUXURY = [{"name": "北京饭店", "type": "豪华型", "price": 1200.0, "rating": 4.8}]
A_FIXED = {"type": "经济型", "rating_range_lower": 4.5}
B_CALL = {"type": "豪华型"}
B2_CALL = {"type": "豪华型", "price_range_upper": 500}
E_CALL = {"type": "经济型", "price_range_upper": 300}


def fill(store: FeedbackStore) -> None:
    """Five conversations, one per case of the export's rule."""
    # A: the call corrected (a cut right after it), the reply after it confirmed (past the cut)
    store.record("a1", [User(A)], [Call({"type": "经济型"}), Result(HOTELS), Assistant("推荐如家酒店。")], "runs/one",
                 "web")
    store.rate("a1", 1, "bad", Correction(arguments=A_FIXED))
    store.rate("a1", 3, "good")
    # B: the call confirmed, the reply unrated; later a call rated bad without a correction (to annotation)
    b = [User(B), Call(B_CALL), Result(LUXURY), Assistant("推荐北京饭店。")]
    store.record("b1", b[:1], b[1:], "runs/one", "api")
    store.rate("b1", 1, "good")
    store.record("b2", b + [User(B2)], [Call(B2_CALL)], "runs/two", "api")
    store.rate("b2", rating="bad")
    # C: no feedback
    store.record("c1", [User("你好")], [Assistant("您好。")], "runs/two", "api")
    # D: a reply that should have been a search
    store.record("d1", [User(D)], [Assistant("好的。")], "runs/two", "chat")
    store.rate("d1", correction=Correction(arguments={"type": "舒适型"}))
    # E: a confirmed reply after a call nobody rated
    store.record("e1", [User(E)], [Call(E_CALL), Result(HOTELS), Assistant("如家酒店288元。")], "runs/one", "web")
    store.rate("e1", rating="good")


@pytest.fixture
def db(tmp_path) -> Path:
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    fill(store)
    store.close()
    return store.path


def export(db: Path, out: Path, *extra: str) -> None:
    assert main(["data", "feedback", "export", "--db", str(db), "--out", str(out), *extra]) == 0


def test_export_writes_training_dialogues_labels_annotation_tasks_and_a_report(db, tmp_path, capsys):
    out = tmp_path / "fb.jsonl"
    export(db, out)
    printed = capsys.readouterr().out
    assert f"wrote 4 dialogues to train on to {out}" in printed and "wrote 1 conversations to annotate" in printed
    convs = {c.turns[0].turn.content: c for c in read_conversations(db)}

    dialogues = read_dialogues(out)  # the seed format, read back like any dialogue file
    assert [d.turns for d in dialogues] == [
        (User(A), Call(A_FIXED)),                                    # cut after the correction
        (User(B), Call(B_CALL)),                                     # up to the confirmed call, before the bad one
        (User(D), Call({"type": "舒适型"})),                           # the reply corrected into a search
        (User(E), Call(E_CALL), Result(HOTELS), Assistant("如家酒店288元。")),  # up to the confirmed reply
    ]
    labels = [json.loads(line) for line in (tmp_path / "fb.labels.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(row["line"], row["conversation"], row["runs"]) for row in labels] == [
        (1, convs[A].id, ["runs/one"]), (2, convs[B].id, ["runs/one"]), (3, convs[D].id, ["runs/two"]),
        (4, convs[E].id, ["runs/one"])]
    assert [row["turns"] for row in labels] == [
        [{"index": 1, "role": "search", "label": "corrected", "by": "model"}],
        [{"index": 1, "role": "search", "label": "confirmed", "by": "model"}],
        [{"index": 1, "role": "search", "label": "corrected", "by": "model"}],
        [{"index": 1, "role": "search", "label": "unrated", "by": "model"},
         {"index": 3, "role": "assistant", "label": "confirmed", "by": "model"}]]
    assert [row["source"] for row in labels] == ["web", "api", "chat", "web"]

    (sent,) = read_dialogues(tmp_path / "fb.to_annotate.jsonl")  # B up to its rejected call, as the model saw it
    assert sent.turns == (User(B), Call(B_CALL), Result(LUXURY), Assistant("推荐北京饭店。"), User(B2), Call(B2_CALL))
    (task,) = json.loads((tmp_path / "fb.label_studio.json").read_text(encoding="utf-8"))
    assert (task["data"]["line"], task["data"]["id"], task["data"]["batch"]) == (1, convs[B].id, "feedback")
    assert task["data"]["model_output"] == "turn 1 (search): a user rated it good\nturn 5 (search): a user rated it bad"
    assert json.loads(task["data"]["dialogue"]) == dialogue_to_seed(sent)

    report = (tmp_path / "fb.report.md").read_text(encoding="utf-8")
    assert "5 conversations (api 2, chat 1, web 2), 6 completions, 9 model turns" in report
    for row in ("| corrected | 1 | 1 | 2 |", "| confirmed | 1 | 2 | 3 |", "| rejected | 1 | 0 | 1 |",
                "| unrated | 1 | 2 | 3 |", "| all | 4 | 5 | 9 | |",
                "| type | 1 | 1 | 0 | 1 | 0 | 1 |", "| rating_range_lower | 0 | 0 | 0 | 1 | 0 | 0 |",
                "| price_range_upper | 0 | 0 | 0 | 0 | 0 | 1 |",
                "| runs/one | 3 | 3 | 6 | 1 | 3 | 0 | 2 | 25.0% |", "| runs/two | 3 | 3 | 3 | 1 | 0 | 1 | 1 | 100.0% |",
                "- confirmed turns past a cut (not trained): 1", "- conversations without feedback (not exported): 1",
                "- corrected turns trained: 2", "- confirmed turns trained: 2", "- unreviewed model turns trained: 1"):
        assert row in report, row


def test_annotated_tasks_merge_back(db, tmp_path):
    out = tmp_path / "fb.jsonl"
    export(db, out, "--label-studio", str(tmp_path / "tasks.json"), "--annotate", str(tmp_path / "sent.jsonl"))
    tasks = json.loads((tmp_path / "tasks.json").read_text(encoding="utf-8"))
    fixed = json.loads(tasks[0]["data"]["dialogue"])
    fixed[-1]["arguments"] = {"type": "豪华型", "price_range_upper": 500, "rating_range_lower": 4.5}
    tasks[0]["annotations"] = [{"completed_by": {"email": "ann@example.com"},
                                "result": [{"from_name": "dialogue", "value": {"text": [json.dumps(fixed)]}}]}]
    (tmp_path / "done.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    assert main(["data", "merge-annotations", "--sent", str(tmp_path / "sent.jsonl"), "--annotations",
                 str(tmp_path / "done.json"), "--out", str(tmp_path / "merged.jsonl")]) == 0
    (merged,) = read_dialogues(tmp_path / "merged.jsonl")
    assert merged.turns[-1] == Call({"type": "豪华型", "price_range_upper": 500, "rating_range_lower": 4.5})


def test_the_export_trains_like_any_dialogue_file(db, tmp_path):
    from tooltune.train.tiny import save_tiny_model

    out = tmp_path / "fb.jsonl"
    export(db, out)
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    run = tmp_path / "run"
    assert main(["train", str(Path(__file__).parents[1] / "configs" / "lora.yaml"), f"model.path={model_dir}",
                 "model.dtype=float32", "train.mixed_precision=no", "data.format=chatglm3", "data.observation=compact",
                 f"data.train={out}", "data.dev=", "data.max_length=1024", "train.max_steps=2", "train.batch_size=2",
                 "train.grad_accum=1", "train.eval_every=0", "train.save_every=0", "train.warmup_steps=0",
                 f"train.out={run}"]) == 0
    summary = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert summary["steps"] == 2 and summary["train_examples"] == 4  # one example per exported dialogue
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses and all(0 < loss < 100 for loss in losses)


def test_user_sentences_of_the_export_are_held_out_by_data_build(db, tmp_path):
    out = tmp_path / "fb.jsonl"
    export(db, out)
    held = user_texts([out])
    assert {normalise(s) for s in (A, B, D, E)} <= set(held) and held[normalise(A)] == f"{out}:1"


@pytest.mark.slow
def test_data_build_exclude_takes_the_export(tmp_path, data_root):
    plain = tmp_path / "plain"
    build = ["data", "build", "--data-dir", str(data_root), "--no-zips", "--limit", "400", "--no-augment"]
    assert main(build + ["--out", str(plain)]) == 0
    # a user of the bot said what a built dialogue says: the export holds that dialogue out of the next build
    sentence = next(t["content"] for line in (plain / "train.jsonl").read_text(encoding="utf-8").splitlines()
                    for t in json.loads(line) if t["role"] == "user" and len(normalise(t["content"])) >= 8)
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.record("c1", [User(sentence)], [Assistant("好的。")], "runs/x", "api")
    store.rate("c1", rating="good")
    store.close()
    export(store.path, tmp_path / "fb.jsonl")
    held = tmp_path / "held"
    assert main(build + ["--out", str(held), "--exclude", str(tmp_path / "fb.jsonl")]) == 0
    assert "| in an excluded file |" in (held / "report.md").read_text(encoding="utf-8")
    for split in ("train", "dev", "test"):
        for line in (held / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            assert all(normalise(t.get("content", "")) != normalise(sentence) for t in json.loads(line)
                       if t["role"] == "user")


def test_bad_input_is_one_line_naming_the_file_or_field(db, tmp_path, capsys):
    def error(*args: str) -> str:
        assert main(["data", "feedback", "export", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tooltune: error: ") and err.count("\n") == 1, err
        return err

    out = str(tmp_path / "fb.jsonl")
    assert f"{tmp_path / 'none.sqlite'}: no such feedback database" in error("--db", str(tmp_path / "none.sqlite"),
                                                                              "--out", out)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert f"{text}: not a tooltune feedback database" in error("--db", str(text), "--out", out)
    assert "--out: a directory" in error("--db", str(db), "--out", str(tmp_path))
    assert "--labels: the same file as --out" in error("--db", str(db), "--out", out, "--labels", out)
    con = sqlite3.connect(db)
    conv = con.execute("SELECT conversation FROM turns WHERE idx = 1 ORDER BY conversation LIMIT 1").fetchone()[0]
    con.execute("UPDATE turns SET turn = '{\"role\": \"searc\"}' WHERE conversation = ? AND idx = 1", (conv,))
    con.commit()
    con.close()
    assert f"{db}: conversation {conv}: turns[1].role: unknown role 'searc'" in error("--db", str(db), "--out", out)
    assert not Path(out).exists()  # nothing written when the database cannot be read
