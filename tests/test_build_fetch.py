"""`tooltune data fetch`: downloads into the data layout atomically, skips what is there, fails clearly offline."""

from __future__ import annotations

import functools
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest

from tooltune.build import fetch
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
    got = fetch.fetch_all(dest, sources)
    assert [(f.status, f.size) for f in got] == [("downloaded", 11), ("downloaded", 11)]
    assert (dest / "crosswoz/hotel_db.json").read_bytes() == b'[["a", {}]]'
    (served / "db.json").write_bytes(b"changed upstream")
    again = fetch.fetch_all(dest, sources, only=["crosswoz/hotel"])
    assert [f.status for f in again] == ["present"]
    assert (dest / "crosswoz/hotel_db.json").read_bytes() == b'[["a", {}]]'
    assert not list(dest.rglob("*.part"))


def test_file_urls_work_too(tmp_path):
    src = tmp_path / "dialog.json"
    src.write_text("[]", encoding="utf-8")
    got = fetch.fetch_one(src.as_uri(), tmp_path / "out/hotel/dialog.json")
    assert got.status == "downloaded" and got.path.read_text(encoding="utf-8") == "[]"


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
    assert main(["data", "fetch", "--dest", str(tmp_path / "d")]) == 0
    assert "downloaded" in capsys.readouterr().out
    assert (tmp_path / "d/hotel/agiclass_hotel_chatbot/hotel.json").read_text(encoding="utf-8") == "{}"
    monkeypatch.setattr(fetch, "SOURCES", {"crosswoz/x.zip": "http://127.0.0.1:9/x.zip"})
    assert main(["data", "fetch", "--dest", str(tmp_path / "e"), "--timeout", "2"]) == 2
    assert "offline" in capsys.readouterr().err
    assert main(["data", "fetch", "--dest", str(tmp_path / "e"), "--only", "nothing/"]) == 2
