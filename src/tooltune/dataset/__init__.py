"""`tooltune data build`: CrossWOZ -> seed hotel dialogues -> augmented -> cleaned -> split -> report.

Stages (each a module, each testable alone): `crosswoz` (extract), `augment` (+ `llm` for optional rewriting),
`clean`, `split`, `report`; `pipeline` joins them and writes `DIR/{train,dev,test}.jsonl`, `report.md`, `balance.png`.
`fetch` downloads the public sources into the cache (`tooltune data fetch`).
"""
