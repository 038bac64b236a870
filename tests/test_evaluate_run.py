"""`evaluate_run`, the one way a run and dialogues become predictions and metrics: every caller gets the same rows
and the same complete record of the settings, and every command shares one default for tokens per turn."""

import json

from tooltune.cli import build_parser, main
from tooltune.datafiles import read_dialogues, write_dialogues
from tooltune.dialogue import MAX_NEW_TOKENS
from tooltune.evaluate.run import EvalOptions, evaluate_run
from tooltune.evaluate.units import eval_units
from tooltune.inference import GenerationConfig
from tooltune.train.tiny import save_tiny_model

META = {"model", "method", "mode", "run", "data", "format", "observation", "argument_order", "dtype", "max_new_tokens",
        "max_prompt_tokens", "batch_size", "generation_seconds", "units", "prompts_cut_inside_a_segment",
        "constrained", "copy", "decoding", "output_vocab", "malformed_outputs", "resumed_units",
        "invalid_characters_replaced"}


def test_in_memory_and_command_line_evaluations_agree_and_record_every_setting(tmp_path, course_dir):
    dialogues = read_dialogues(course_dir / "test.chatglm3.jsonl")[:1]
    model_dir = save_tiny_model(tmp_path / "tiny", vocab_size=300)
    options = EvalOptions(format="llama2", limit=3, max_new_tokens=4, task_success=False, rouge=False)
    result = evaluate_run(model_dir, dialogues, options)
    assert set(result.meta) == META and result.meta["units"] == len(result.rows) == 3
    assert result.meta["max_new_tokens"] == 4 and result.meta["decoding"] == {"kind": "greedy", "prefix_reuse": True,
                                                                                 "continuous_batching": True}
    assert {"bleu4", "slot_p", "slot_r", "slot_f1"} <= set(result.metrics)
    assert [r.id for r in result.rows] == [u.id for u in eval_units(dialogues, split="eval")][:3]

    data = tmp_path / "one.jsonl"
    write_dialogues(dialogues, data, "seed")
    out = tmp_path / "out"
    assert main(["eval", str(model_dir), "--format", "llama2", "--data", str(data), "--out", str(out), "--limit", "3",
                 "--max-new-tokens", "4", "--no-task-success"]) == 0
    written = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(written) == META | {"metrics"}
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["raw"] for line in lines] == [r.raw for r in result.rows]

    # given units (what bench/constrained.py scores): the same predictions, row for row
    units = eval_units(dialogues)[:3]
    again = evaluate_run(result.loaded, units, options)
    assert [r.raw for r in again.rows] == [r.raw for r in result.rows] and len(again.predictions) == 3


def test_one_default_for_tokens_per_turn():
    parser = build_parser()
    defaults = [parser.parse_args(argv).max_new_tokens for argv in
                (["eval", "RUN", "--data", "D", "--out", "O"], ["chat", "RUN"], ["serve", "RUN"])]
    assert defaults == [MAX_NEW_TOKENS] * 3
    assert GenerationConfig().max_new_tokens == EvalOptions().max_new_tokens == MAX_NEW_TOKENS
