"""`tgpipe data` as a user meets it, downloads served by a local HTTP server (no network)."""

import functools
import hashlib
import http.server
import subprocess
import sys
import threading

import pytest

from tgpipe.cli import main
from tgpipe.errors import InputError
from tgpipe.executor.download import fetch, get_dataset
from tgpipe.executor.synthetic import synthetic


def tgpipe(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True, cwd=cwd
    )


def assert_user_error(r, message):
    """Exit status 2, one line on stderr that says what is wrong, no traceback, no output."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("tgpipe data: error: ")]
    assert len(errors) == 1 and r.stderr.endswith(errors[0] + "\n")  # after any progress bar
    assert message in errors[0]


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/broken.csv":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"u,i,ts,label\n0,1,2,0\n")
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A folder served on 127.0.0.1; holds tiny.csv, a JODIE file of 30,000 events (~0.5 MiB)."""
    root = tmp_path / "www"
    root.mkdir()
    g = synthetic(1000, 30_000, seed=5)
    lines = [f"{u},{i},{t:.0f},{y}" for u, i, t, y in zip(g.src, g.dst, g.ts, g.label, strict=True)]
    (root / "tiny.csv").write_text("u,i,ts,label\n" + "\n".join(lines) + "\n")
    (root / "junk.csv").write_text("this is not data\n")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- data get


def test_get_verifies_checksum_shows_progress_and_loads(server, tmp_path):
    root, base = server
    out = tmp_path / "out"
    digest = sha(root / "tiny.csv")
    r = tgpipe(
        "data", "get", "tiny", "--url", f"{base}/tiny.csv", "--sha256", digest, "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    saved = out / "tiny" / "tiny.csv"
    assert saved.read_bytes() == (root / "tiny.csv").read_bytes()
    assert f"sha256 {digest} verified" in r.stdout
    assert "events     30,000" in r.stdout and "format" not in r.stdout.split("saved")[0]
    kib = -(-saved.stat().st_size // 1024)
    assert f"tiny.csv [####################] {kib}/{kib} KiB" in r.stderr  # the progress bar
    assert r.stderr.count("tiny.csv [") >= 4  # a line per tenth in a log
    assert sorted(p.name for p in saved.parent.iterdir()) == ["tiny.csv"]


def test_get_checksum_mismatch_keeps_nothing(server, tmp_path):
    _, base = server
    out = tmp_path / "out"
    r = tgpipe(
        "data", "get", "tiny", "--url", f"{base}/tiny.csv", "--sha256", "0" * 64,
        "--out", str(out),
    )  # fmt: skip
    assert_user_error(r, "checksum mismatch for")
    assert "nothing was kept" in r.stderr
    assert list(out.iterdir()) == []  # no file, no temporary, not even the folder it made


def test_get_404_is_an_error(server, tmp_path):
    _, base = server
    out = tmp_path / "out"
    r = tgpipe("data", "get", "gone", "--url", f"{base}/gone.csv", "--out", str(out))
    assert_user_error(r, "HTTP 404")
    assert list(out.iterdir()) == []


def test_unknown_checksum_is_reported_not_verified(server, tmp_path, capsys):
    root, base = server
    args = ["data", "get", "tiny", "--url", f"{base}/tiny.csv", "--out", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert f"sha256 {sha(root / 'tiny.csv')} NOT verified (no known checksum)" in first
    assert main(args) == 0  # a second time: the file is there, nothing is fetched
    assert "already there, kept" in capsys.readouterr().out


def test_broken_download_keeps_nothing(server, tmp_path):
    _, base = server
    (tmp_path / "got").mkdir()
    with pytest.raises(InputError, match="broke off 99979 bytes before the end; nothing was"):
        fetch(f"{base}/broken.csv", tmp_path / "got" / "broken.csv", stream=None)
    assert list((tmp_path / "got").iterdir()) == []


def test_unreachable_server(tmp_path):
    with pytest.raises(InputError, match="cannot download http://127.0.0.1:9/x.csv"):
        fetch("http://127.0.0.1:9/x.csv", tmp_path / "x.csv", stream=None, timeout=5)


def test_downloaded_file_that_does_not_load(server, tmp_path, capsys):
    _, base = server
    args = ["data", "get", "junk", "--url", f"{base}/junk.csv", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was downloaded but does not load" in err and "a csv" not in err
    assert "unknown format" in err or "holds a header but no events" in err


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="nope"), "unknown data set 'nope'; known: collegemsg"),
        (dict(name="wikipedia-tgl", urls=["http://x/a"]), "give one --url for each, not 1"),
        (dict(name="mine", urls=["http://x/a"], sha256=["abc"]), "is not 64 hex digits"),
        (dict(name="../up", urls=["http://x/a"]), "use letters, digits"),
        (dict(name="mine", urls=["http://x/"]), "cannot tell a file name"),
    ],
)
def test_get_bad_requests(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        get_dataset(out=tmp_path, stream=None, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_list_names_the_registry(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "wikipedia " in out and "sx-mathoverflow" in out and "wikipedia-tgl" in out


# ---------------------------------------------------------------------------- data info


def test_info_on_wikipedia(wikipedia_csv):
    r = tgpipe("data", "info", str(wikipedia_csv))
    assert r.returncode == 0, r.stderr
    assert "format     jodie: JODIE csv" in r.stdout
    assert "events     157,474" in r.stdout
    assert "nodes      9,227 (8,227 sources, 1,000 destinations: bipartite)" in r.stdout
    assert "span 2,678,373 (31.0 days if seconds)" in r.stdout
    assert "split      train 110,232 / val 23,621 / test 23,621" in r.stdout


def test_info_on_synthetic(capsys):
    assert main(["data", "info", "synthetic:100,500"]) == 0
    out = capsys.readouterr().out
    assert "events     500" in out and "generated by" in out


@pytest.mark.parametrize(
    "content,message",
    [
        ("hello world\n", "unknown format"),
        ("u,i,ts\n0,1,2\n", "the header names 3 column(s)"),
        ("u,i,ts,label\n0,1,5,0\n0,1,4,0\n", "line 3, column 'ts': time 4 is earlier"),
        ("u,i,ts,label\n0,1,nan,0\n", "line 2, column 'ts': nan where a number is needed"),
    ],
    ids=["unknown format", "missing column", "unsorted", "NaN"],
)
def test_info_bad_file_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert_user_error(tgpipe("data", "info", str(path)), message)
