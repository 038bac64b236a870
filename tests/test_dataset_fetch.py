"""`tooltune data fetch`: downloads into the data layout atomically, skips what is there, fails clearly offline."""

from __future__ import annotations

import functools
import hashlib
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest

from tooltune.dataset import fetch
from tooltune.cli import main
from tooltune.errors import ToolTuneError


@pytest.fixture
def server(tmp_path):
    """A 127.0.0.1 HTTP server serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_fetch_downloads_into_the_layout_and_skips_present_files(tmp_path, server):
    served, base = server
    (served / "db.json").write_bytes(b'[["a", {}]]')
    (served / "v.zip").write_bytes(b"PK fake zip")
    sources = {"crosswoz/hotel_db.json": f"{base}/db.json", "crosswoz/val.json.zip": f"{base}/v.zip"}
    dest = tmp_path / "data"
    hashes = {"crosswoz/hotel_db.json": hashlib.sha256(b'[["a", {}]]').hexdigest()}  # the zip: unchecked
    got = fetch.fetch_all(dest, sources, hashes=hashes)
    assert [(f.status, f.size) for f in got] == [("downloaded", 11), ("downloaded (unchecked)", 11)]
    assert (dest / "crosswoz/hotel_db.json").read_bytes() == b'[["a", {}]]'
    (served / "db.json").write_bytes(b"changed upstream")
    again = fetch.fetch_all(dest, sources, only=["crosswoz/hotel"], hashes=hashes)
    assert [f.status for f in again] == ["present"]
    assert (dest / "crosswoz/hotel_db.json").read_bytes() == b'[["a", {}]]'
    assert not list(dest.rglob("*.part"))


def test_file_urls_work_too(tmp_path):
    src = tmp_path / "dialog.json"
    src.write_text("[]", encoding="utf-8")
    got = fetch.fetch_one(src.as_uri(), tmp_path / "out/hotel/dialog.json")
    assert got.status == "downloaded (unchecked)" and got.path.read_text(encoding="utf-8") == "[]"


def test_offline_gives_a_clear_error_and_leaves_nothing(tmp_path):
    dest = tmp_path / "data"
    with pytest.raises(ToolTuneError, match="offline"):
        fetch.fetch_all(dest, {"crosswoz/test.json.zip": "http://127.0.0.1:9/test.json.zip"}, timeout=2)
    assert not [p for p in dest.rglob("*") if p.is_file()]


def test_http_errors_name_the_status(tmp_path, server):
    _, base = server
    with pytest.raises(ToolTuneError, match="HTTP 404"):
        fetch.fetch_one(f"{base}/missing.json", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_interrupted_download_leaves_no_partial_file(tmp_path):
    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("reset by peer")
            return b"half"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    with pytest.raises(ToolTuneError):
        fetch.fetch_one("http://example.invalid/x", tmp_path / "x.json", opener=lambda url, timeout: Broken())
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch_uses_the_source_table(tmp_path, monkeypatch, capsys):
    src = tmp_path / "hotel.json"
    src.write_text("{}", encoding="utf-8")
    monkeypatch.setattr(fetch, "SOURCES", {"hotel/agiclass_hotel_chatbot/hotel.json": src.as_uri()})
    monkeypatch.setattr(fetch, "SHA256", {"hotel/agiclass_hotel_chatbot/hotel.json": hashlib.sha256(b"{}").hexdigest()})
    assert main(["data", "fetch", "--dest", str(tmp_path / "d")]) == 0
    assert "downloaded" in capsys.readouterr().out
    assert (tmp_path / "d/hotel/agiclass_hotel_chatbot/hotel.json").read_text(encoding="utf-8") == "{}"
    monkeypatch.setattr(fetch, "SOURCES", {"crosswoz/x.zip": "http://127.0.0.1:9/x.zip"})
    assert main(["data", "fetch", "--dest", str(tmp_path / "e"), "--timeout", "2"]) == 2
    assert "offline" in capsys.readouterr().err
    assert main(["data", "fetch", "--dest", str(tmp_path / "e"), "--only", "nothing/"]) == 2


def test_a_download_with_another_sha256_is_refused_and_not_kept(tmp_path, server):
    served, base = server
    (served / "db.json").write_bytes(b"tampered")
    dest = tmp_path / "data"
    with pytest.raises(ToolTuneError, match="SHA-256 .* not the expected"):
        fetch.fetch_all(dest, {"crosswoz/hotel_db.json": f"{base}/db.json"},
                        hashes={"crosswoz/hotel_db.json": hashlib.sha256(b"original").hexdigest()})
    assert not [p for p in dest.rglob("*") if p.is_file()]
    got = fetch.fetch_all(dest, {"crosswoz/hotel_db.json": f"{base}/db.json"},
                          hashes={"crosswoz/hotel_db.json": hashlib.sha256(b"tampered").hexdigest()})
    assert [f.status for f in got] == ["downloaded"]
    assert fetch.fetch_all(dest, {"crosswoz/x.zip": f"{base}/db.json"}, hashes={})[0].status == "downloaded (unchecked)"


def test_every_file_the_demo_needs_has_a_source_and_a_hash():
    assert set(fetch.DEMO_FILES) <= set(fetch.SHA256) <= set(fetch.SOURCES)


def test_ensure_fetches_what_the_demo_needs_and_the_hashes_are_the_course_files(tmp_path, server, data_root):
    """The course's own files, served over HTTP, pass the hash table: the table holds the published files' hashes
    (computed independently here from the copies the benchmarks read)."""
    served, base = server
    for name in fetch.DEMO_FILES:
        (served / name).parent.mkdir(parents=True, exist_ok=True)
        (served / name).write_bytes((data_root / name).read_bytes())
        assert hashlib.sha256((data_root / name).read_bytes()).hexdigest() == fetch.SHA256[name], name
    root = tmp_path / "fresh"
    said = []
    got = fetch.ensure(root, fetch.DEMO_FILES, said.append, sources={k: f"{base}/{k}" for k in fetch.DEMO_FILES})
    assert sorted(f.path.relative_to(root).as_posix() for f in got) == sorted(fetch.DEMO_FILES)
    assert all(f.status == "downloaded" for f in got)
    assert all((root / k).read_bytes() == (data_root / k).read_bytes() for k in fetch.DEMO_FILES)
    assert "8 of the files needed" in said[0]
    assert fetch.ensure(root, fetch.DEMO_FILES, said.append) == []  # all there: nothing fetched, no network


def test_the_demo_offline_on_a_fresh_machine_says_what_to_do_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fetch, "SOURCES", {k: f"http://127.0.0.1:9/{k}" for k in fetch.SOURCES})
    empty = tmp_path / "data"
    empty.mkdir()
    assert main(["demo", "--data-dir", str(empty), "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tooltune data fetch" in err[0] and "--data-dir" in err[0]
    assert not [p for p in empty.rglob("*") if p.is_file()]
