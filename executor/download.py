"""Getting public data sets by name: download, check the checksum, keep only whole files.

`DATASETS` names the public files that M-TGNN papers use. A download streams into a hidden
temporary file beside the target, hashing as it goes, and is renamed into place only when it
is complete and its sha256 matches: an interrupted or corrupt download leaves nothing behind.
Where no checksum is known, none is made up: the computed one is reported as not verified,
so that a user can pin it with ``--sha256`` next time.

Examples
--------
>>> sorted(DATASETS)[:3]
['collegemsg', 'email-eu-core-temporal', 'lastfm']
>>> DATASETS["wikipedia"].files[0].filename
'wikipedia.csv'
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

from tgpipe import __version__
from tgpipe.errors import InputError
from tgpipe.files import atomic_open
from tgpipe.progress import Progress

__all__ = ["DATASETS", "Dataset", "Fetched", "Remote", "fetch", "get_dataset", "sha256_of"]

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Remote:
    """One file of a data set: where it is, its name on disk, its sha256 when known."""

    url: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    about: str
    files: tuple[Remote, ...]


@dataclass(frozen=True)
class Fetched:
    """What became of one file: its path, sha256, whether a known checksum matched it, and
    whether it was already there (not downloaded again)."""

    path: Path
    sha256: str
    verified: bool
    kept: bool = False


def _jodie(name: str, about: str) -> Dataset:
    return Dataset(about, (Remote(f"https://snap.stanford.edu/jodie/{name}.csv", f"{name}.csv"),))


def _tgl(folder: str, about: str, *, edge_features: bool) -> Dataset:
    base = f"https://s3.us-west-2.amazonaws.com/dgl-data/dataset/tgl/{folder}"
    names = ["edges.csv"] + (["edge_features.pt"] if edge_features else [])
    return Dataset(about, tuple(Remote(f"{base}/{n}", n) for n in names))


def _snap(name: str, about: str) -> Dataset:
    filename = f"{name}.txt.gz"
    return Dataset(about, (Remote(f"https://snap.stanford.edu/data/{filename}", filename),))


#: Public data sets by name. No sha256 is published for these files, so none is listed:
#: `get_dataset` computes and reports it.
DATASETS: dict[str, Dataset] = {
    "wikipedia": _jodie("wikipedia", "JODIE: user edits of Wikipedia pages, 172-dim features"),
    "reddit": _jodie("reddit", "JODIE: user posts in subreddits, 172-dim features"),
    "mooc": _jodie("mooc", "JODIE: student actions in a MOOC, 4-dim features"),
    "lastfm": _jodie("lastfm", "JODIE: users listening to songs, no features"),
    "wikipedia-tgl": _tgl("WIKI", "TGL's WIKI: edges.csv + edge_features.pt", edge_features=True),
    "reddit-tgl": _tgl("REDDIT", "TGL's REDDIT: edges.csv + edge_features.pt", edge_features=True),
    "mooc-tgl": _tgl("MOOC", "TGL's MOOC: edges.csv", edge_features=False),
    "lastfm-tgl": _tgl("LASTFM", "TGL's LASTFM: edges.csv", edge_features=False),
    "collegemsg": _snap("CollegeMsg", "SNAP: private messages in a college social network"),
    "email-eu-core-temporal": _snap("email-Eu-core-temporal", "SNAP: e-mails in a research body"),
    "sx-mathoverflow": _snap("sx-mathoverflow", "SNAP: interactions on Math Overflow"),
    "sx-askubuntu": _snap("sx-askubuntu", "SNAP: interactions on Ask Ubuntu"),
    "sx-superuser": _snap("sx-superuser", "SNAP: interactions on Super User"),
}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    stream: TextIO | None = sys.stderr,
    timeout: float = 60.0,
) -> str:
    """Download `url` to `dest` with a progress bar on `stream`; return its sha256.

    The file appears at `dest` only when whole and, if `sha256` is given, matching it.
    """
    dest = Path(dest)
    request = urllib.request.Request(url, headers={"User-Agent": f"tgpipe/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise InputError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the name or --url"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(
            f"cannot download {url}: {reason}; check the network and the URL, or download "
            "the file by hand and load it from disk"
        ) from None
    hasher = hashlib.sha256()
    try:
        with response, atomic_open(dest, "wb", suffix=".part") as out:
            got = _copy(response, out, hasher, dest.name, stream)
            length = response.headers.get("Content-Length")
            if length is not None and got != int(length):
                raise http.client.IncompleteRead(b"", int(length) - got)
            digest = hasher.hexdigest()
            if sha256 and digest != sha256.lower():
                raise InputError(
                    f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got "
                    f"{digest}; nothing was kept (a corrupt or changed file: retry, or check "
                    "the source)"
                )
    except http.client.IncompleteRead as exc:
        raise InputError(
            f"download of {url} broke off "
            f"{'' if exc.expected is None else f'{exc.expected} bytes '}before the end; "
            "nothing was kept, try again"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise InputError(f"download of {url} failed: {exc}; nothing was kept, try again") from None
    return digest


def _copy(response, out, hasher, label: str, stream: TextIO | None) -> int:
    length = response.headers.get("Content-Length")
    total_kib = -(-int(length) // 1024) if length and int(length) > 0 else None
    got = 0
    with Progress(total_kib, label, unit="KiB", stream=stream) as bar:
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                before, got = got, got + len(chunk)
                bar.update(-(-got // 1024) - -(-before // 1024))
        except http.client.IncompleteRead:
            missing = int(length) - got if length else None
            raise http.client.IncompleteRead(b"", missing) from None
    return got


def get_dataset(
    name: str,
    out: str | Path = "data",
    *,
    urls: list[str] | tuple[str, ...] = (),
    sha256: list[str] | tuple[str, ...] = (),
    force: bool = False,
    stream: TextIO | None = sys.stderr,
) -> tuple[Path, list[Fetched]]:
    """Download data set `name` into ``out/name/``; return that folder and what each file became.

    `urls` replace the registry's (one per file, in order) or, for a name not in the registry,
    are the files to get. `sha256` gives the expected checksums in the same order; a file
    already present is kept unless `force` or a known checksum says it is wrong.
    """
    files = _resolve(name, list(urls), list(sha256))
    folder = Path(out) / name
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {folder}: {exc.strerror}; choose --out") from None
    done = []
    try:
        for remote in files:
            path = folder / remote.filename
            if path.exists() and not force:
                digest = sha256_of(path)
                if remote.sha256 is None or digest == remote.sha256.lower():
                    done.append(Fetched(path, digest, remote.sha256 is not None, kept=True))
                    continue
            digest = fetch(remote.url, path, sha256=remote.sha256, stream=stream)
            done.append(Fetched(path, digest, remote.sha256 is not None))
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()  # leave no trace of a download that got nothing
        raise
    return folder, done


def _resolve(name: str, urls: list[str], sha256: list[str]) -> tuple[Remote, ...]:
    if name in DATASETS:
        files = DATASETS[name].files
        if urls and len(urls) != len(files):
            raise InputError(
                f"{name} has {len(files)} file(s) ({', '.join(r.filename for r in files)}); "
                f"give one --url for each, not {len(urls)}"
            )
        if urls:
            files = tuple(Remote(u, r.filename, r.sha256) for u, r in zip(urls, files, strict=True))
    elif urls:
        files = tuple(Remote(u, _filename(u)) for u in urls)
    else:
        raise InputError(
            f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))} "
            "(or give --url for another)"
        )
    if name.startswith(".") or not all(c.isalnum() or c in "._-" for c in name):
        raise InputError(f"data set name {name!r}: use letters, digits, '.', '_' and '-' only")
    if sha256:
        if len(sha256) != len(files):
            raise InputError(f"give one --sha256 for each of the {len(files)} file(s)")
        for text in sha256:
            if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
                raise InputError(f"--sha256 {text!r} is not 64 hex digits")
        pairs = zip(files, sha256, strict=True)
        files = tuple(Remote(r.url, r.filename, h.lower()) for r, h in pairs)
    return files


def _filename(url: str) -> str:
    name = Path(urlparse(url).path).name
    if not name or name.startswith("."):
        raise InputError(f"cannot tell a file name from --url {url}; end it with the file name")
    return name
