"""Fuzz the parsers of generated text: every chat format reads any output into a reply or a call whose arguments
are plain JSON (no sets, bytes, complex numbers, `...`, lone surrogates, NaN or huge integers), never raising."""

from __future__ import annotations

import pytest
from fuzz_support import LITERALS, generated_texts, parse_target
from hypothesis import HealthCheck, given, settings

from tooltune.dialogue import Call
from tooltune.formats import FORMATS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_texts())
def test_any_output_parses_to_a_reply_or_a_json_call(case):
    parse_target(case)


@pytest.mark.parametrize("literal", ["{1, 2}", "b'x'", "1j", "...", "(1, 2)", "'\\udc80'", "1e999", "9" * 150])
def test_python_literals_no_tool_argument_holds_are_malformed_calls(literal):
    assert literal in LITERALS
    parsed = FORMATS["chatglm3"].parse(f"search_hotels\n```python\ntool_call(type={literal})\n```")
    assert isinstance(parsed.turn, Call) and parsed.turn.arguments == {} and parsed.malformed


@pytest.mark.parametrize("name,text", [("llama2", 'search:\n{"type": "\\udc80"}'),
                                       ("llama2", 'search:\n{"price_range_upper": NaN}'),
                                       ("chatglm2", 'search_hotels\n{"type": ' + "[" * 2000 + "]" * 2000 + "}"),
                                       ("chat_template", '<tool_call>{"name": "s", "arguments": {"x": 1e400}}'
                                                         "</tool_call>")])
def test_json_no_tool_argument_holds_is_a_malformed_call(name, text):
    parsed = FORMATS[name].parse(text)
    assert isinstance(parsed.turn, Call) and parsed.turn.arguments == {} and parsed.malformed


def test_a_clean_call_still_parses():
    text = "search_hotels\n```python\ntool_call(type='经济型', rating_range_lower=4.5)\n```"
    parsed = FORMATS["chatglm3"].parse(text)
    assert parsed.turn == Call({"type": "经济型", "rating_range_lower": 4.5}) and not parsed.malformed
