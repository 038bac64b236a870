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
interrupted fetch never leaves a truncated file; files already present are skipped. A download whose SHA-256 differs
from `SHA256` (the published files as the course and the benchmarks used them) is refused and not kept.
`crosswoz/train.json.zip` has no entry there: it is fetched unchecked, and said so.
"""

from __future__ import annotations

import hashlib
import os
import sys
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

SHA256: dict[str, str] = {
    "crosswoz/hotel_db.json": "5746b3846f285c82dd7640b50d3ac21f2ae929f52fdca2b603e452585a4a694e",
    "crosswoz/val.json.zip": "b2b717990f6f0a1c98daaf5dc465e61d42f7de69c0d31e88e674275b1f34c94c",
    "crosswoz/test.json.zip": "e57703894995211bba8638f130dc7df81e8992b71f3c05c10022ad23d6ca5310",
    f"{_V3}/train.chatglm3.jsonl": "f56406f17b2b9575ea275c9a2398689833ecf1d6bb068c20ba8afaf0f9dcbd7f",
    f"{_V3}/dev.chatglm3.jsonl": "ba331c6f56ffdf85bf74e80c734a38210af240134dcb7195855955be059627fb",
    f"{_V3}/test.chatglm3.jsonl": "08dbad14cc553c75628afdac81de72a1e699b2fa6fdd6c657c3096dd869f4c4a",
    f"{_V3}/dev.llama2.jsonl": "67df1a43f054721e4dcb401eda5d876a67470c77006bd847e9037eb9091b6dc9",
    f"{_V3}/test.llama2.jsonl": "b69c29f63f3ea893b36f7aef5e6366e4f31c235fd3628f80cb09637771569277",
    "hotel/agiclass_hotel_chatbot/dialog.json": "bb9bf8f63b4b2d02be7f38da3312286d98a5631aa53b75e739f9661c44af4fff",
    "hotel/agiclass_hotel_chatbot/hotel.json": "5d94c179e8e1342e5fedbc162b06bd29619f7153957e5285b2a0e23a75588f8b",
}
"""destination -> SHA-256 of the file every figure of bench/ was measured on; a download must match it."""

DEMO_FILES = ("crosswoz/hotel_db.json", "crosswoz/val.json.zip", "crosswoz/test.json.zip",
              f"{_V3}/train.chatglm3.jsonl", f"{_V3}/dev.chatglm3.jsonl", f"{_V3}/test.chatglm3.jsonl",
              f"{_V3}/test.llama2.jsonl", "hotel/agiclass_hotel_chatbot/dialog.json")
"""What `tooltune demo` reads: the course's split (the llama2 test file gives the rules baseline its units), the hotel
database, and the dialogues `data build` starts from."""

class Offline(ToolTuneError):
    """A source could not be reached at all (no network, DNS, refused): not a bad answer from it."""


Opener = Callable[[str, float], object]
"""(url, timeout) -> a readable response (what `urllib.request.urlopen` returns)."""


@dataclass(frozen=True)
class Fetched:
    """What happened to one file."""

    path: Path
    url: str
    status: str
    """"downloaded", "downloaded (unchecked)" (no SHA-256 to compare with) or "present" (skipped)."""
    size: int
    """Bytes on disk."""


def _urlopen(url: str, timeout: float) -> object:
    return urllib.request.urlopen(url, timeout=timeout)


def fetch_one(url: str, dest: Path, opener: Opener = _urlopen, timeout: float = 60.0, sha256: str | None = None,
              progress: bool = False) -> Fetched:
    """Download `url` to `dest` atomically (temporary file + rename) unless `dest` exists. With `sha256`, a download
    of other content is refused and removed; `progress` draws a byte count on stderr."""
    if dest.exists():
        return Fetched(dest, url, "present", dest.stat().st_size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with opener(url, timeout) as response:  # type: ignore[attr-defined]
                    with _bar(response, dest.name, progress) as bar:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as e:
                raise ToolTuneError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                raise Offline(f"cannot download {url} ({reason}): are you offline? Copy the data by hand "
                                    f"into {dest.parent} or point --data-dir / $TOOLTUNE_DATA at a copy") from None
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ToolTuneError(f"{url} has SHA-256 {digest.hexdigest()}, not the expected {sha256}: the source has "
                                f"changed or the download was altered; {dest} was not written")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    status = "downloaded" if sha256 is not None else "downloaded (unchecked)"
    return Fetched(dest, url, status, dest.stat().st_size)


def _bar(response, name: str, show: bool):
    """A tqdm byte counter (total from Content-Length when the server sends it), disabled unless `show`."""
    from tqdm import tqdm

    length = getattr(response, "headers", {}).get("Content-Length") if show else None
    return tqdm(total=int(length) if length and length.isdigit() else None, unit="B", unit_scale=True,
                unit_divisor=1024, desc=name, disable=not show, file=sys.stderr, leave=False)


def fetch_all(dest: Path, sources: dict[str, str] | None = None, only: Iterable[str] | None = None,
              opener: Opener = _urlopen, timeout: float = 60.0, hashes: dict[str, str] | None = None,
              progress: bool = False) -> list[Fetched]:
    """Fetch every source of `sources` (default `SOURCES`; or those whose destination starts with one of `only`),
    each checked against `hashes` (default `SHA256`) where it has an entry."""
    sources = SOURCES if sources is None else sources
    hashes = SHA256 if hashes is None else hashes
    wanted = [k for k in sources if only is None or any(k.startswith(o) for o in only)]
    if not wanted:
        raise ToolTuneError(f"--only matches no source; the sources are: {', '.join(sources)}")
    return [fetch_one(sources[k], dest / k, opener, timeout, hashes.get(k), progress) for k in wanted]


def ensure(root: Path, needed: Iterable[str], say: Callable[[str], None] = print, sources: dict[str, str] | None = None,
           **fetch_options) -> list[Fetched]:
    """Fetch whichever of `needed` (destinations of `sources`, default `SOURCES`) `root` lacks; nothing when all are
    there. Offline, the error says in one line what to do instead."""
    sources = SOURCES if sources is None else sources
    missing = [k for k in needed if not (root / k).exists()]
    if not missing:
        return []
    say(f"data: {len(missing)} of the files needed are not in {root}; fetching them from their public sources")
    try:
        got = fetch_all(root, sources={k: sources[k] for k in missing}, progress=True, **fetch_options)
    except Offline:
        raise ToolTuneError(f"the data is missing from {root} and cannot be downloaded here (offline?): run "
                            f"`tooltune data fetch` on a machine with internet and copy its data dir here, or "
                            "give --data-dir (or $TOOLTUNE_DATA) a copy of the data") from None
    for f in got:
        say(f"data: {f.status} {f.path} ({f.size:,} bytes)")
    return got
