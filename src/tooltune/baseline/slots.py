"""Regular expressions that read `search_hotels` arguments out of one user sentence.

Covers the forms the course data uses: prices ("300到400元", "三百多块", "不超过500", "1000元以上"), ratings
("4.5分以上", "评分是5分" = exactly 5), hotel types ("经济的" -> "经济型"). Facilities and hotel names need tables
learned from train (`tooltune.baseline.lexicon`); this module knows no data.
"""

from __future__ import annotations

import re
from typing import Any

TYPES = ("豪华型", "经济型", "舒适型", "高档型")

_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUMBER = re.compile(r"[零一二两三四五六七八九十百千]+")
_CN_PAIR = re.compile(r"([一二两三四五六七八九])(?:到|至|-)?([一二两三四五六七八九])(百|千)")


def chinese_to_int(text: str) -> int | None:
    """'三百' -> 300, '一千二' -> 1200, '十五' -> 15, '五' -> 5; None for text that is not a numeral."""
    total, digit, last_unit = 0, None, 1
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            total += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
        else:
            return None
    if digit is not None:
        # "一千二" means 1200: a trailing digit after a unit counts in the next unit down.
        total += digit * (last_unit // 10 if last_unit > 1 else 1)
    return total


def _pair(m: re.Match) -> str:
    low, high = _CN_DIGITS[m.group(1)], _CN_DIGITS[m.group(2)]
    if high <= low:
        return m.group(0)  # "一二百" is not a range (and "十二百" not a number): leave it
    unit = _CN_UNITS[m.group(3)]
    return f"{low * unit}-{high * unit}"


def _replace_cn(match: re.Match) -> str:
    word = match.group(0)
    # A lone digit character is usually a word ("一家", "两个"), not a number: only convert numerals with a unit.
    if not any(u in word for u in _CN_UNITS):
        return word
    value = chinese_to_int(word)
    return word if value is None else str(value)


def normalise(text: str) -> str:
    """Full-width forms to ASCII, Chinese numerals with a unit to digits, range words to '-'."""
    text = text.translate(str.maketrans("０１２３４５６７８９．～－—", "0123456789.~--"))
    # "五六百" / "两三百元" name a range: 500-600.
    text = _CN_PAIR.sub(_pair, text)
    text = _CN_NUMBER.sub(_replace_cn, text)
    # "300多" means 300 to 400: the next round number of the leading digit's magnitude ("300多到400" is a range).
    text = re.sub(r"(\d{2,})多(?!\s*(?:到|-|至|~))", lambda m: f"{m.group(1)}-{_round_up(int(m.group(1)))}", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*(?:元|块|分)?\s*(?:多)?\s*(?:-|~|到|至)\s*(\d+(?:\.\d+)?)", r"\1-\2", text)
    return text


def _round_up(n: int) -> int:
    step = 10 ** (len(str(n)) - 1)
    return n + step


def _num(s: str) -> int | float:
    value = float(s)
    return int(value) if value.is_integer() else value


# A price or rating mention: one or two numbers, the unit after them, and bound words around them.
_LOWER_PRE = r"(?:大于等于|不能低于|不要低于|不得低于|不低于|不少于|不小于|高于|超过|至少|大于|多于|起码|最少|最低|比)"
_UPPER_PRE = r"(?:低于|不超过|不要超过|不能超过|别超过|不要高于|不高于|少于|小于|不到|最多|至多|不大于|控制在)"
_LOWER_POST = r"(?:及以上|以上|之上|起|往上|高|贵)"
_UPPER_POST = r"(?:及以下|以下|以内|之内|内|之下|往下|低|便宜)"
_MENTION = re.compile(
    rf"(?:(?P<pre>{_LOWER_PRE}|{_UPPER_PRE})(?:评分|价格)?(?:为|是|在)?)?\s*(?P<a>\d+(?:\.\d+)?)(?:-(?P<b>\d+(?:\.\d+)?))?"
    rf"\s*(?P<unit>元|块钱|块|分|星)?\s*(?:钱)?\s*(?P<post>{_LOWER_POST}|{_UPPER_POST})?"
)
_RATING_CUE = re.compile(r"评分|评价|分数|星级")


def _is_rating(m: re.Match, text: str) -> bool:
    if m.group("unit") in ("分", "星"):
        return True
    if m.group("unit") in ("元", "块", "块钱"):
        return False
    a = float(m.group("a"))
    if a > 5:
        return False
    before = text[max(0, m.start() - 6):m.start()]
    return bool(_RATING_CUE.search(before)) or "." in m.group("a")


def _bounds(m: re.Match) -> tuple[Any, Any]:
    """(lower, upper) for one mention; None where the sentence sets no bound."""
    a, b = _num(m.group("a")), m.group("b")
    if b is not None:
        return a, _num(b)
    pre, post = m.group("pre") or "", m.group("post") or ""
    if re.fullmatch(_LOWER_PRE, pre) or (post and re.fullmatch(_LOWER_POST, post)):
        return a, None
    if re.fullmatch(_UPPER_PRE, pre) or (post and re.fullmatch(_UPPER_POST, post)):
        return None, a
    return a, a


def numeric_slots(text: str) -> dict[str, Any]:
    """Price and rating bounds of one sentence: keys price_range_lower/upper, rating_range_lower/upper.

    A rating of 5 with no bound word ("评分是5分") is exact (lower = upper), as the course data writes it, a lower one
    a floor ("评分为4.5分" -> lower 4.5); a price with no
    bound word and no range is not read (the data has no consistent reading for "价格是500元").
    """
    text = normalise(text)
    out: dict[str, Any] = {}
    for m in _MENTION.finditer(text):
        if m.group("pre") == "比" and not m.group("post"):
            continue  # "比" needs "高"/"低" after the number to say which way
        lower, upper = _bounds(m)
        if _is_rating(m, text):
            if max(v for v in (lower, upper) if v is not None) > 5:
                continue  # "十分满意" is "very", not a rating of 10
            prefix = "rating_range"
        elif m.group("unit") or m.group("b") or m.group("pre") or m.group("post"):
            if lower is not None and lower == upper:
                continue  # a bare price ("500元的酒店") gives no bound
            prefix = "price_range"
        else:
            continue  # a number with no unit or bound word: a count, a time ("24小时"), a name ("7天")
        if m.group("pre") == "比" and m.group("post") in ("低", "便宜"):
            lower, upper = None, lower
        if prefix == "rating_range" and lower == upper and lower is not None and lower < 5:
            upper = None  # "评分为4.5分" is a floor in train's calls; only "5分" is exact
        if lower is not None:
            out.setdefault(f"{prefix}_lower", lower)
        if upper is not None:
            out.setdefault(f"{prefix}_upper", upper)
    return out


# Train: of 688 type words in call sentences, 686 name the type, whatever follows ("经济吗", "舒适性", "经济且").
_TYPE_WORD = re.compile(r"(豪华|经济|舒适|高档)")


def hotel_type(text: str) -> str | None:
    """The hotel type a sentence asks for ('经济的酒店' -> '经济型'), the last one named, or None."""
    found = _TYPE_WORD.findall(text)
    return f"{found[-1]}型" if found else None
