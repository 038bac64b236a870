"""`tooltune data fetch`: download the public sources into the data cache, in the layout of `../shared/data`.

Every file comes from one entry of `SOURCES` (destination path relative to the data dir -> URL):

| destination | repository, branch, path |
| --- | --- |
| `crosswoz/{train,val,test}.json.zip` | github.com/thu-coai/CrossWOZ, master, `data/crosswoz/*.json.zip` (Apache-2.0) |
| `crosswoz/hotel_db.json` | same, `data/crosswoz/database/hotel_db.json` |
| `hotel/v3_chatglm3_llama2/{train,dev,test}.chatglm3.jsonl` | github.com/agiclass/fine-tuning-lab, deprecated, `data/` |
| `hotel/v3_chatglm3_llama2/{dev,test}.llama2.jsonl` | same (the course never published the train one) |
| `hotel/agiclass_hotel_chatbot/{dialog,hotel}.json` | github.com/agiclass/hotel-chatbot, main, `data/` (Unlicense) |

The hotel-chatbot paths could not be checked from the offline machine this was written on: if a download of them
fails with HTTP 404, fix the two rows of `SOURCES` (nothing else refers to the URLs).

Each file is written to a temporary file beside its destination and renamed into place when complete, so an
interrupted fetch never leaves a truncated file; files already present are skipped.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tooltune.errors import ToolTuneError

_CROSSWOZ = "https://raw.githubusercontent.com/thu-coai/CrossWOZ/master/data/crosswoz"
_LAB = "https://raw.githubusercontent.com/agiclass/fine-tuning-lab/deprecated/data"
_CHATBOT = "https://raw.githubusercontent.com/agiclass/hotel-chatbot/main/data"
_V3 = "hotel/v3_chatglm3_llama2"

SOURCES: dict[str, str] = {
    "crosswoz/train.json.zip": f"{_CROSSWOZ}/train.json.zip",
    "crosswoz/val.json.zip": f"{_CROSSWOZ}/val.json.zip",
    "crosswoz/test.json.zip": f"{_CROSSWOZ}/test.json.zip",
    "crosswoz/hotel_db.json": f"{_CROSSWOZ}/database/hotel_db.json",
    f"{_V3}/train.chatglm3.jsonl": f"{_LAB}/train.chatglm3.jsonl",
    f"{_V3}/dev.chatglm3.jsonl": f"{_LAB}/dev.chatglm3.jsonl",
    f"{_V3}/test.chatglm3.jsonl": f"{_LAB}/test.chatglm3.jsonl",
    f"{_V3}/dev.llama2.jsonl": f"{_LAB}/dev.llama2.jsonl",
    f"{_V3}/test.llama2.jsonl": f"{_LAB}/test.llama2.jsonl",
    "hotel/agiclass_hotel_chatbot/dialog.json": f"{_CHATBOT}/dialog.json",
    "hotel/agiclass_hotel_chatbot/hotel.json": f"{_CHATBOT}/hotel.json",
}
"""destination (relative to the data dir) -> URL. The one place URLs live."""

Opener = Callable[[str, float], object]
"""(url, timeout) -> a readable response (what `urllib.request.urlopen` returns)."""


@dataclass(frozen=True)
class Fetched:
    """What happened to one file."""

    path: Path
    url: str
    status: str
    """"downloaded" or "present" (skipped)."""
    size: int
    """Bytes on disk."""


def _urlopen(url: str, timeout: float) -> object:
    return urllib.request.urlopen(url, timeout=timeout)


def fetch_one(url: str, dest: Path, opener: Opener = _urlopen, timeout: float = 60.0) -> Fetched:
    """Download `url` to `dest` atomically (temporary file + rename) unless `dest` exists."""
    if dest.exists():
        return Fetched(dest, url, "present", dest.stat().st_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with opener(url, timeout) as response:  # type: ignore[attr-defined]
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
            except urllib.error.HTTPError as e:
                raise ToolTuneError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                raise ToolTuneError(f"cannot download {url} ({reason}): are you offline? Copy the data by hand "
                                    f"into {dest.parent} or point --data-dir / $TOOLTUNE_DATA at a copy") from None
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Fetched(dest, url, "downloaded", dest.stat().st_size)


def fetch_all(dest: Path, sources: dict[str, str] | None = None, only: Iterable[str] | None = None,
              opener: Opener = _urlopen, timeout: float = 60.0) -> list[Fetched]:
    """Fetch every source of `sources` (default `SOURCES`; or those whose destination starts with one of `only`)."""
    sources = SOURCES if sources is None else sources
    wanted = [k for k in sources if only is None or any(k.startswith(o) for o in only)]
    if not wanted:
        raise ToolTuneError(f"--only matches no source; the sources are: {', '.join(sources)}")
    return [fetch_one(sources[k], dest / k, opener, timeout) for k in wanted]
