"""Offline, seeded augmentation of seed hotel dialogues: each kind switchable, each counted in the report.

Per dialogue, each with probability `p` (0.3 by default):
- `paraphrase`: a facility the user names as the database does ("无烟房") is said colloquially ("不吸烟的房间"),
  in the user's words and in the search arguments (the model learns to copy the user's phrase, as the course's
  data does). The phrases come from a table learned from the course's train dialogues
  (`tooltune.facilities.learn_paraphrases`, phrase -> canonical, inverted here) plus `facilities.HAND_RULES`.
- `qa`: after a reply that follows a return with records, the user asks about one hotel (price, phone, address,
  rating, subway or a facility) and the assistant answers from its record.
- `closing`: the user picks a returned hotel and the assistant wishes a pleasant stay.
New dialogues: `named` queries by a hotel's full or short name, `price_upper` queries by a price upper bound.

Randomness: every decision draws from `random.Random(f"{seed}:{kind}:{key}")`, so the output depends only on the
seed and the input, and switching one kind off leaves the others' choices unchanged.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from tooltune.dataset.items import Item, make_item
from tooltune.dialogue import Assistant, Call, Result, Turn, User


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how often."""

    paraphrase: bool = True
    """Say one canonical facility colloquially, in the user text and the arguments."""
    qa: bool = True
    """Add a question about a returned hotel and its answer."""
    closing: bool = True
    """Add a closing exchange (the user picks a hotel)."""
    p: float = 0.3
    """Probability of each of paraphrase / qa / closing per dialogue."""
    named: int = 200
    """How many extra dialogues query a hotel by its full or short name (0: none)."""
    price_upper: int = 200
    """How many extra dialogues query by a price upper bound (0: none)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"AugmentConfig.p must be in [0, 1], got {self.p}")
        if self.named < 0 or self.price_upper < 0:
            raise ValueError("AugmentConfig.named and .price_upper must be >= 0")


def rng_for(seed: int, kind: str, key: str) -> random.Random:
    # A str seed is hashed with SHA-512 by `random`, independent of PYTHONHASHSEED: stable across runs.
    return random.Random(f"{seed}:{kind}:{key}")


# ---- facility paraphrases ------------------------------------------------------------------------------------

# Characters too common in facility names to show that a learned phrase and a name mean the same thing.
_GENERIC = set("服务房间设施提供的中心有")

RULES: dict[str, str] = {
    # Colloquial phrases (phrase -> canonical) that share no two-character piece with the name, so that the
    # plausibility check below would drop them if learned; `facilities.HAND_RULES` adds more.
    "中餐": "中式餐厅", "西餐": "西式餐厅", "供暖": "暖气", "叫早服务": "叫醒服务", "不吸烟的房间": "无烟房",
    "能打国际长途": "国际长途电话", "游泳池": "室内游泳池", "停车场": "收费停车位", "早饭": "早餐服务",
}


def _bigrams(text: str) -> set[str]:
    units = re.findall(r"[a-z0-9]+|[^a-z0-9]", text.lower())
    return {a + b for a, b in zip(units, units[1:]) if not {a, b} <= _GENERIC}


def plausible_paraphrase(phrase: str, canonical: str) -> bool:
    """Whether a learned phrase -> canonical pair shares a two-character piece (not only generic characters).

    `learn_paraphrases` votes from co-occurrence, so some of its pairs are wrong ("不可吸烟的房间" -> 健身房,
    "风筝机" -> 吹风机); saying a facility by a wrong phrase would teach wrong arguments, so those go (with a few
    right ones, which `RULES` brings back). Phrases with spaces or "|" are annotation residue.
    """
    if not phrase.strip() or re.search(r"[\s|]", phrase):
        return False
    return bool(_bigrams(phrase) & _bigrams(canonical))


def paraphrase_table(learned: Mapping[str, str], rules: Mapping[str, str] = {}) -> dict[str, list[str]]:
    """canonical -> sorted colloquial phrases: the plausible learned pairs, `rules` and `RULES`."""
    table: dict[str, set[str]] = {}
    pairs = [(p, c) for p, c in learned.items() if plausible_paraphrase(p, c)] + list({**RULES, **rules}.items())
    for phrase, canonical in pairs:
        if phrase != canonical and phrase.strip():
            table.setdefault(canonical, set()).add(phrase)
    return {c: sorted(ps) for c, ps in sorted(table.items())}


def add_paraphrase(item: Item, table: Mapping[str, list[str]], rng: random.Random) -> Item | None:
    """Replace one canonical facility the user says literally by a phrase of `table`; None when none applies.

    The phrase replaces the facility in that user turn and in the facilities of every later call (which carry the
    earlier constraints over).
    """
    turns = list(item.dialogue.turns)
    candidates = []  # (call index, facility) where the user turn before the call says the facility literally
    for i, t in enumerate(turns):
        if isinstance(t, Call) and i > 0 and isinstance(turns[i - 1], User):
            for f in t.arguments.get("facilities") or []:
                if isinstance(f, str) and table.get(f) and f in turns[i - 1].content:
                    candidates.append((i, f))
    if not candidates:
        return None
    i, facility = rng.choice(candidates)
    phrase = rng.choice(table[facility])
    turns[i - 1] = User(turns[i - 1].content.replace(facility, phrase, 1))
    for j in range(i, len(turns)):
        t = turns[j]
        if isinstance(t, Call) and facility in (t.arguments.get("facilities") or []):
            facilities = [phrase if f == facility else f for f in t.arguments["facilities"]]
            turns[j] = Call({**t.arguments, "facilities": facilities}, name=t.name)
    return item.with_turns(turns, "paraphrase")


# ---- questions about a returned hotel, closings ---------------------------------------------------------------

# field -> (questions, answer template); `{h}` is how the question names the hotel, `{name}` the full name.
QA_TEMPLATES: dict[str, tuple[tuple[str, ...], str]] = {
    "price": (("{h}的价格是多少？", "{h}住一晚多少钱？", "{h}多少钱一晚？"), "{name}的价格是{price}元。"),
    "phone": (("{h}的电话是多少？", "能告诉我{h}的电话吗？", "{h}的联系电话是什么？"), "{name}的电话是{phone}。"),
    "address": (("{h}的地址在哪里？", "{h}在什么位置？", "{h}的具体地址是什么？"), "{name}的地址是{address}。"),
    "rating": (("{h}的评分是多少？", "{h}评分怎么样？"), "{name}的评分是{rating}分。"),
    "subway": (("{h}附近有地铁站吗？", "去{h}坐地铁在哪站下？"), "{name}附近的地铁站是{subway}。"),
}
# Words that show a field was already asked about later in the dialogue (asking twice reads oddly).
QA_KEYWORDS = {"price": ("价格", "多少钱", "价钱"), "phone": ("电话",), "address": ("地址", "位置", "在哪"),
               "rating": ("评分", "分数"), "subway": ("地铁",)}
FACILITY_QUESTIONS = ("{h}有{f}吗？", "{h}提供{f}吗？")
FACILITY_ANSWERS = ("有的，{name}提供{f}。", "没有，{name}不提供{f}。")
CLOSING_USER = ("好的，那我就住{name}了。", "就订{name}吧，谢谢。", "好的，我决定住在{name}。", "那就{name}吧。")
CLOSING_ASSISTANT = ("好的，祝您入住愉快！", "好的，祝您入住愉快。", "不客气，祝您旅途愉快！")


def _number_text(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


def qa_pair(record: Mapping[str, Any], alone: bool, facility_names: list[str], rng: random.Random,
            asked: str = "") -> tuple[str, str]:
    """A question about `record` and its answer from the record's fields. `alone`: the only hotel returned.

    Fields whose keywords occur in `asked` (the user's later turns) are not asked again.
    """
    fields = [f for f in QA_TEMPLATES if record.get(f) not in (None, "")
              and not any(w in asked for w in QA_KEYWORDS[f])] + ["facilities"]
    field = rng.choice(fields)
    h = rng.choice(("这家酒店", "这个酒店", "它")) if alone else record["name"]
    if field == "facilities":
        f = rng.choice(facility_names)
        has = f in (record.get("facilities") or [])
        return rng.choice(FACILITY_QUESTIONS).format(h=h, f=f), FACILITY_ANSWERS[0 if has else 1].format(
            name=record["name"], f=f)
    questions, answer = QA_TEMPLATES[field]
    values = {k: _number_text(v) if k in ("price", "rating") else v for k, v in record.items()}
    return rng.choice(questions).format(h=h), answer.format(**values)


def _replies_after_records(turns: list[Turn]) -> list[int]:
    """Indexes of assistant turns that directly follow a return with at least one record."""
    return [i for i, t in enumerate(turns)
            if isinstance(t, Assistant) and i > 0 and isinstance(turns[i - 1], Result) and turns[i - 1].records]


def add_qa(item: Item, facility_names: list[str], rng: random.Random) -> Item | None:
    turns = list(item.dialogue.turns)
    spots = _replies_after_records(turns)
    if not spots:
        return None
    at = rng.choice(spots)
    records = turns[at - 1].records
    asked = "".join(t.content for t in turns[at:] if isinstance(t, User))
    question, answer = qa_pair(rng.choice(records), len(records) == 1, facility_names, rng, asked)
    return item.with_turns(turns[:at + 1] + [User(question), Assistant(answer)] + turns[at + 1:], "qa")


def add_closing(item: Item, rng: random.Random) -> Item | None:
    turns = list(item.dialogue.turns)
    spots = _replies_after_records(turns)
    if not spots or not isinstance(turns[-1], Assistant):
        return None
    name = rng.choice(turns[spots[-1] - 1].records)["name"]
    closing = [User(rng.choice(CLOSING_USER).format(name=name)), Assistant(rng.choice(CLOSING_ASSISTANT))]
    return item.with_turns(turns + closing, "closing")


# ---- new dialogues: by name, by price upper bound -------------------------------------------------------------

NAME_QUERIES = (("请问有没有叫{q}的酒店？", "为您找到{name}。"), ("我想订{q}的房间。", "为您找到{name}，价格是{price}元。"),
                ("帮我查一下{q}的电话。", "{name}的电话是{phone}。"), ("{q}在哪里？", "{name}的地址是{address}。"),
                ("{q}怎么样？评分多少？", "{name}是{type}酒店，评分是{rating}分。"))
PRICE_QUERIES = ("我要找一个比{p}元便宜的酒店。", "有没有{p}元以下的酒店？", "帮我找一家价格不超过{p}元的酒店。",
                 "预算{p}块以内，有什么酒店推荐吗？")


def short_name(name: str) -> str:
    """"北京盛厦宾馆" -> "盛厦宾馆"; "速8酒店(北京前门店)" -> "速8酒店(前门店)": the course's short names drop 北京."""
    short = re.sub(r"^北京(市)?", "", name)
    short = re.sub(r"\(北京", "(", short).replace("（北京", "（")
    return short if len(short) >= 2 else name


def named_query(record: Mapping[str, Any], rng: random.Random) -> list[Turn]:
    q = rng.choice((record["name"], short_name(record["name"])))
    templates = [t for t in NAME_QUERIES if "{price}" not in t[1] or record.get("price") is not None]
    question, answer = rng.choice(templates)
    values = {k: _number_text(v) if k in ("price", "rating") else v for k, v in record.items()}
    return [User(question.format(q=q)), Call({"name": q}), Result([dict(record)]), Assistant(answer.format(**values))]


def price_query(hotels: list[Mapping[str, Any]], rng: random.Random) -> list[Turn]:
    """A query by price upper bound; the return holds one or two hotels at or under it, as the database has them."""
    bound = rng.choice(range(200, 1600, 100))
    fits = [h for h in hotels if h.get("price") is not None and 0 < h["price"] <= bound]
    chosen = rng.sample(fits, min(len(fits), rng.choice((1, 2))))
    if len(chosen) == 1:
        reply = f"为您推荐{chosen[0]['name']}，价格是{_number_text(chosen[0]['price'])}元。"
    elif chosen:
        reply = f"为您推荐{chosen[0]['name']}和{chosen[1]['name']}。"
    else:
        reply = f"抱歉，没有找到{bound}元以下的酒店。"
    return [User(rng.choice(PRICE_QUERIES).format(p=bound)), Call({"price_range_upper": bound}),
            Result([dict(h) for h in chosen]), Assistant(reply)]


# ---- the stage -------------------------------------------------------------------------------------------------

def augment(items: Iterable[Item], hotels: list[dict[str, Any]], table: Mapping[str, list[str]],
            config: AugmentConfig, seed: int) -> tuple[list[Item], Counter]:
    """Augmented copies of `items` (same order) plus the new dialogues; `counts[kind]` = dialogues it touched."""
    facility_names = sorted({f for h in hotels for f in h["facilities"]})
    counts: Counter = Counter()
    out = []
    for item in items:
        for kind, enabled in (("paraphrase", config.paraphrase), ("qa", config.qa), ("closing", config.closing)):
            rng = rng_for(seed, kind, item.where)
            if not enabled or rng.random() >= config.p:
                continue
            if kind == "paraphrase":
                new = add_paraphrase(item, table, rng)
            elif kind == "qa":
                new = add_qa(item, facility_names, rng)
            else:
                new = add_closing(item, rng)
            if new is not None:
                item = new
                counts[kind] += 1
        out.append(item)
    by_id = sorted(hotels, key=lambda h: h["hotel_id"])
    for i in range(config.named):
        rng = rng_for(seed, "named", str(i))
        out.append(make_item(named_query(rng.choice(by_id), rng), "generated:named", str(i)))
        counts["named"] += 1
    for i in range(config.price_upper):
        out.append(make_item(price_query(by_id, rng_for(seed, "price_upper", str(i))), "generated:price_upper", str(i)))
        counts["price_upper"] += 1
    return out, counts
