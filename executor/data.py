"""Loading temporal interaction graphs from the formats users have.

Four formats, told apart by what the file holds, not by its name:

``jodie``
    JODIE's csv: header ``user_id,item_id,timestamp,state_label,features...`` (the columns after
    the fourth are edge features), or its 4-column form ``u,i,ts,label``.
``tgn``
    TGN's processed ``ml_NAME.csv`` (header ``,u,i,ts,label,idx``), with optional
    ``ml_NAME.npy`` edge features (row ``idx``; row 0 is TGN's padding) and
    ``ml_NAME_node.npy`` node features (row = node id) beside it.
``tgl``
    TGL's ``edges.csv`` (header ``,src,dst,time,int_roll,ext_roll``), with optional
    ``edge_features.pt`` and ``node_features.pt`` (torch tensors) beside it.
``snap``
    SNAP's temporal ``src dst ts``: whitespace separated, no header, ``#`` comments.

A path may be the file or a folder that holds one such file; ``.gz`` files are read as they
are. The spec ``synthetic`` (or ``synthetic:NODES,EVENTS``) names the built-in generator
instead, so that every ``--data`` option takes it.

Node ids become 0..N-1 in the order of the original ids, and `TemporalGraph.node_ids` keeps
the original id of each node. JODIE data is bipartite: when user and item ids overlap
(the original JODIE files number both from 0), items are placed after users, as TGN's
preprocessing does; when they are already one space (as in the shared ``wikipedia.csv``),
ids stay as they are. Repeated identical rows are kept: two interactions of the same pair in
the same second are two events (TGN and JODIE keep them too).

Ids may be as large and as sparse as they come (hashes, ids 10^12 apart): they are renumbered
0..N-1 and never used as array indices, so they cost nothing. They must be below 2^53 (about
9.007e15) all the same: above it a float64 cannot hold every integer, so two ids of the file
could become one node; such a file is refused, with a request to renumber its ids.

Everything is checked with the file's line numbers: numbers in every column, ids that are
integers in [0, 2^53), no NaN, and time sorted. Events are never sorted here: a file out of
order is an error that says to sort it, since reordering would silently change what "the next
batch" is.

Examples
--------
>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "tiny.csv").write_text("u,i,ts,label\\n0,0,1,0\\n1,0,5,0\\n0,1,9,1\\n")
>>> detect_format(folder)[0]
'jodie'
>>> g = load_dataset(folder)
>>> g.src.tolist(), g.dst.tolist(), g.node_ids.tolist()
([0, 1, 0], [2, 2, 3], [0, 1, 0, 1])
"""

from __future__ import annotations

import gzip
import io
import warnings
import zlib
from pathlib import Path

import numpy as np

from tgpipe.errors import InputError
from tgpipe.executor.graph import TemporalGraph
from tgpipe.executor.synthetic import synthetic

__all__ = ["FORMATS", "SYNTHETIC_DEFAULT", "detect_format", "is_synthetic_spec", "load_dataset"]

#: Format name -> what it looks like (used in messages and by ``tgpipe data info``).
FORMATS = {
    "jodie": "JODIE csv (u,i,ts,label[,features...])",
    "tgn": "TGN ml_NAME.csv (,u,i,ts,label,idx)",
    "tgl": "TGL edges.csv (,src,dst,time,int_roll,ext_roll)",
    "snap": "SNAP text 'src dst ts'",
}

#: (nodes, events) of the spec ``synthetic`` with no numbers: a quick run on one CPU.
SYNTHETIC_DEFAULT = (1000, 20_000)

_EXPECTED = "expected one of: " + "; ".join(FORMATS.values())
_SUFFIXES = (".csv", ".txt", ".tsv", ".csv.gz", ".txt.gz", ".tsv.gz")
_COMMENTS = ("#", "%")
_INDEX_NAMES = ("", "Unnamed: 0")  # the unnamed index column that pandas writes
#: Ids must be below this: float64 holds every integer up to it, not beyond.
MAX_ID = 2**53
_BROKEN_GZIP = (EOFError, gzip.BadGzipFile, zlib.error)


def _damaged(path: Path, exc: Exception) -> InputError:
    """A .gz file that does not decompress: cut short by a failed download, or not gzip."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InputError(
        f"{path} is a damaged or cut-short gzip file ({reason}); download it again "
        "('tgpipe data get --force NAME') or unpack it yourself"
    )


def detect_format(path: str | Path) -> tuple[str, Path]:
    """The format of a file or folder and the file that holds its events.

    Decided from the first line: ``,u,...`` is TGN, ``,src,...`` is TGL, another csv header
    is JODIE, numbers separated by blanks (or a ``#`` comment) is SNAP.
    """
    path = Path(path)
    if path.is_dir():
        path = _pick_file(path)
    elif not path.exists():
        raise InputError(f"no such file or folder: {path}; check the path")
    lines = _head(path, 1)
    if not lines:
        raise InputError(f"{path} is empty; {_EXPECTED}")
    return _classify(path, lines[0][1]), path


def load_dataset(path: str | Path, *, name: str | None = None) -> TemporalGraph:
    """Load a temporal graph from a file or folder of any supported format.

    `name` defaults to the data set's own name (``ml_wikipedia.csv`` -> ``wikipedia``; TGL's
    ``WIKI/edges.csv`` -> ``WIKI``). ``synthetic[:NODES,EVENTS]``, where no such file exists,
    is `synthetic` with seed 0. Any problem raises InputError with one line.
    """
    if is_synthetic_spec(path):
        return _synthetic_spec(str(path), name)
    fmt, file = detect_format(path)
    loader = {"jodie": _load_jodie, "tgn": _load_tgn, "tgl": _load_tgl, "snap": _load_snap}[fmt]
    return TemporalGraph(**loader(file), name=name or _default_name(fmt, file))


def is_synthetic_spec(path: str | Path) -> bool:
    """Whether `path` names the generator (``synthetic...``) rather than a file that exists."""
    text = str(path)
    return Path(text).name == text and text.startswith("synthetic") and not Path(text).exists()


def _synthetic_spec(spec: str, name: str | None) -> TemporalGraph:
    sizes = SYNTHETIC_DEFAULT
    if spec != "synthetic":
        head, _, numbers = spec.partition(":")
        try:
            sizes = tuple(int(x) for x in numbers.split(","))
        except ValueError:
            sizes = ()
        if head != "synthetic" or len(sizes) != 2:
            raise InputError(
                f"no such file or folder: {spec} (for generated data write synthetic or "
                "synthetic:NODES,EVENTS)"
            )
    return synthetic(*sizes, name=name or "synthetic")


# ---------------------------------------------------------------------------- detection


def _pick_file(folder: Path) -> Path:
    if (folder / "edges.csv").is_file():
        return folder / "edges.csv"
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(_SUFFIXES)
    )
    if len(files) == 1:
        return files[0]
    if not files:
        raise InputError(
            f"{folder} holds no data file ({', '.join(_SUFFIXES)}); pass the file itself "
            f"or a folder with one; {_EXPECTED}"
        )
    shown = ", ".join(p.name for p in files[:6]) + (", ..." if len(files) > 6 else "")
    raise InputError(f"{folder} holds several data files ({shown}); pass the one to load")


def _open(path: Path) -> io.TextIOBase:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig")
        return open(path, encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}; check the path") from None


def _head(path: Path, n: int) -> list[tuple[int, str]]:
    """The first `n` non-blank lines with their line numbers (1-based)."""
    found: list[tuple[int, str]] = []
    try:
        with _open(path) as fh:
            for number, line in enumerate(iter(lambda: fh.readline(1 << 20), ""), 1):
                if line.strip():
                    found.append((number, line.rstrip("\r\n")))
                    if len(found) == n:
                        break
    except _BROKEN_GZIP as exc:
        raise _damaged(path, exc) from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file; {_EXPECTED}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}; check the path") from None
    return found


def _tokens(line: str) -> list[str]:
    return [t.strip().strip('"').strip() for t in line.split(",")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _classify(path: Path, first: str) -> str:
    if first.lstrip().startswith(_COMMENTS):
        return "snap"
    if "," not in first:
        fields = first.split()
        if len(fields) >= 2 and all(_is_number(t) for t in fields):
            return "snap"
        raise InputError(f"{path}: unknown format (first line {first[:60]!r}); {_EXPECTED}")
    tokens = _tokens(first)
    if tokens[0] in _INDEX_NAMES and len(tokens) > 1:
        if tokens[1] == "src":
            return "tgl"
        if tokens[1] == "u":
            return "tgn"
        raise InputError(f"{path}: unknown format (header {first[:60]!r}); {_EXPECTED}")
    if all(_is_number(t) for t in tokens):
        raise InputError(
            f"{path}: a csv with no header; add the header u,i,ts,label (JODIE) or use "
            f"another format: {_EXPECTED}"
        )
    return "jodie"


def _default_name(fmt: str, file: Path) -> str:
    stem = file.name
    for suffix in (".gz", ".csv", ".txt", ".tsv"):
        stem = stem.removesuffix(suffix)
    if fmt == "tgl":
        return file.resolve().parent.name or stem
    if fmt == "tgn":
        return stem.removeprefix("ml_")
    return stem


# ---------------------------------------------------------------------------- reading


def _read_table(
    path: Path,
    names: list[str],
    *,
    header_line: int,
    delimiter: str | None = ",",
    comments: tuple[str, ...] | None = None,
) -> np.ndarray:
    """All rows below the header as float64 [E, len(names)], fast, with a clear error.

    numpy parses; only when it fails does a slow pass find the line and column to name.
    """
    try:
        with _open(path) as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(
                fh,
                dtype=np.float64,
                delimiter=delimiter,
                skiprows=header_line,
                comments=comments,
                ndmin=2,
            )
    except ValueError as exc:
        _find_bad_field(path, names, header_line, delimiter, comments)
        raise InputError(f"{path}: cannot read it as numbers ({exc})") from None
    except _BROKEN_GZIP as exc:
        raise _damaged(path, exc) from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a text file; {_EXPECTED}") from None
    if table.size == 0:
        what = "only comments" if header_line == 0 else "a header but no events"
        raise InputError(f"{path} holds {what}; add events, one per line")
    if table.shape[1] != len(names):
        line = _line_of(path, 0, header_line, comments, delimiter)
        raise InputError(
            f"{path} line {line} has {table.shape[1]} fields, expected {len(names)} "
            f"({','.join(names)}); fix the columns{' or the header' if header_line else ''}"
        )
    return table


def _data_lines(path: Path, header_line: int, delimiter: str | None, comments):
    """(line number, fields) of every data line, as numpy reads them (slow; errors only)."""
    with _open(path) as fh:
        for number, line in enumerate(fh, 1):
            if number <= header_line:
                continue
            if comments:
                for mark in comments:
                    line = line.split(mark, 1)[0]
            line = line.rstrip("\r\n")
            fields = line.split(delimiter) if delimiter else line.split()
            if fields and fields != [""]:
                yield number, fields


def _line_of(path: Path, row: int, header_line: int, comments, delimiter=",") -> int:
    for k, (number, _) in enumerate(_data_lines(path, header_line, delimiter, comments)):
        if k == row:
            return number
    return -1


def _find_bad_field(path, names, header_line, delimiter, comments) -> None:
    for number, fields in _data_lines(path, header_line, delimiter, comments):
        if len(fields) != len(names):
            raise InputError(
                f"{path} line {number} has {len(fields)} field(s), expected {len(names)} "
                f"({','.join(names)}); fix or remove that line"
            )
        for column, text in zip(names, fields, strict=True):
            if not _is_number(text):
                what = f"{text.strip()!r} is not a number" if text.strip() else "empty field"
                raise InputError(
                    f"{path} line {number}, column '{column}': {what}; fix or remove that line"
                )


def _check(
    path: Path,
    table: np.ndarray,
    names: list[str],
    *,
    ids: tuple[int, ...],
    time: int,
    header_line: int,
    delimiter: str | None = ",",
    comments=None,
) -> None:
    """Finite numbers everywhere, integer ids in [0, MAX_ID), time sorted: else name the
    line."""

    def where(row: int, col: int) -> str:
        line = _line_of(path, row, header_line, comments, delimiter)
        return f"{path} line {line}, column '{names[col]}'"

    finite = np.isfinite(table)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(
            f"{where(row, col)}: {table[row, col]} where a number is needed; "
            "fix or remove that line"
        )
    for col in ids:
        values = table[:, col]
        bad = values != np.floor(values)
        if bad.any():
            row = int(bad.argmax())
            raise InputError(
                f"{where(row, col)}: id {values[row]:g} is not an integer; ids must be whole: "
                "fix that line"
            )
        if values.min() < 0:
            row = int(values.argmin())
            raise InputError(
                f"{where(row, col)}: id {values[row]:g} is negative; ids must be >= 0: "
                "fix that line or renumber the ids"
            )
        if values.max() >= MAX_ID:
            row = int(values.argmax())
            raise InputError(
                f"{where(row, col)}: id {values[row]:.6g} is 2^53 or more, too large to read "
                "exactly (two ids could become one node); renumber the ids, e.g. 0..N-1"
            )
    ts = table[:, time]
    back = np.diff(ts) < 0
    if back.any():
        row = int(back.argmax()) + 1
        raise InputError(
            f"{where(row, time)}: time {ts[row]:g} is earlier than the line before "
            f"({ts[row - 1]:g}); the events must be in time order: sort the file by "
            f"'{names[time]}' first"
        )


def _dense(src: np.ndarray, dst: np.ndarray, *, separate: bool):
    """Ids -> 0..N-1 keeping their order; with `separate`, dst ids are a second space after
    the src ids. Returns (src, dst, original id of each node)."""
    if separate:
        users, src = np.unique(src, return_inverse=True)
        items, dst = np.unique(dst, return_inverse=True)
        return src, dst + len(users), np.concatenate([users, items])
    ids, inverse = np.unique(np.concatenate([src, dst]), return_inverse=True)
    return inverse[: len(src)], inverse[len(src) :], ids


def _rows(table: np.ndarray, index: np.ndarray, file: Path, what: str) -> np.ndarray | None:
    """Rows `index` of a feature table read from `file`, checked to fit."""
    if table.ndim != 2:
        raise InputError(f"{file} must hold a 2-d array [rows, dim], got shape {table.shape}")
    if len(index) and index.max() >= len(table):
        raise InputError(
            f"{file} has {len(table)} rows but {what} go up to {int(index.max())}; "
            "it does not belong to these events"
        )
    if table.shape[1] == 0:
        return None
    return np.asarray(table[index], dtype=np.float32)


def _label(column: np.ndarray) -> np.ndarray:
    return column.astype(np.int64) if (column == np.floor(column)).all() else column


# ---------------------------------------------------------------------------- formats


def _load_jodie(file: Path) -> dict:
    head = _head(file, 2)
    (header_line, header), first = head[0], head[1:]
    names = _tokens(header)
    if len(names) < 4:
        raise InputError(
            f"{file}: the header names {len(names)} column(s) ({header.strip()}); a JODIE csv "
            "has user_id,item_id,timestamp,state_label[,features...]"
        )
    if not first:
        raise InputError(f"{file} holds a header but no events; add events, one per line")
    width = len(first[0][1].split(","))
    if len(names) == 5 and width > 5:  # JODIE's header names the feature list once
        names = names[:4] + [f"feature {k}" for k in range(width - 4)]
    table = _read_table(file, names, header_line=header_line)
    _check(file, table, names, ids=(0, 1), time=2, header_line=header_line)
    users, items = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    separate = bool(np.intersect1d(users, items).size)
    src, dst, node_ids = _dense(users, items, separate=separate)
    edge_feat = table[:, 4:].astype(np.float32) if table.shape[1] > 4 else None
    return dict(
        src=src,
        dst=dst,
        ts=table[:, 2],
        edge_feat=edge_feat,
        label=_label(table[:, 3]),
        n_nodes=len(node_ids),
        node_ids=node_ids,
    )


def _header_of(file: Path, required: list[str], what: str, *, exact: bool):
    head = _head(file, 1)
    header_line, header = head[0]
    names = _tokens(header)
    if names[: len(required)] != required or (exact and len(names) != len(required)):
        raise InputError(
            f"{file}: header {header.strip()!r} does not match {what} "
            f"({','.join(required)}{'' if exact else ',...'}); fix the header"
        )
    names[0] = "index"
    return header_line, names


def _load_tgn(file: Path) -> dict:
    header_line, names = _header_of(
        file, ["", "u", "i", "ts", "label", "idx"], "TGN's ml_NAME.csv", exact=True
    )
    table = _read_table(file, names, header_line=header_line)
    _check(file, table, names, ids=(1, 2, 5), time=3, header_line=header_line)
    src, dst, node_ids = _dense(
        table[:, 1].astype(np.int64), table[:, 2].astype(np.int64), separate=False
    )
    stem = file.name.removesuffix(".gz").removesuffix(".csv")
    edge_file, node_file = file.with_name(f"{stem}.npy"), file.with_name(f"{stem}_node.npy")
    edge_feat = node_feat = None
    if edge_file.exists():
        edge_feat = _rows(_npy(edge_file), table[:, 5].astype(np.int64), edge_file, "idx")
    if node_file.exists():
        node_feat = _rows(_npy(node_file), node_ids, node_file, "node ids")
    return dict(
        src=src,
        dst=dst,
        ts=table[:, 3],
        edge_feat=edge_feat,
        node_feat=node_feat,
        label=_label(table[:, 4]),
        n_nodes=len(node_ids),
        node_ids=node_ids,
    )


def _load_tgl(file: Path) -> dict:
    header_line, names = _header_of(
        file, ["", "src", "dst", "time"], "TGL's edges.csv", exact=False
    )
    table = _read_table(file, names, header_line=header_line)
    _check(file, table, names, ids=(0, 1, 2), time=3, header_line=header_line)
    src, dst, node_ids = _dense(
        table[:, 1].astype(np.int64), table[:, 2].astype(np.int64), separate=False
    )
    edge_file, node_file = file.with_name("edge_features.pt"), file.with_name("node_features.pt")
    edge_feat = node_feat = None
    if edge_file.exists():
        edge_feat = _rows(_tensor(edge_file), table[:, 0].astype(np.int64), edge_file, "rows")
    if node_file.exists():
        node_feat = _rows(_tensor(node_file), node_ids, node_file, "node ids")
    return dict(
        src=src,
        dst=dst,
        ts=table[:, 3],
        edge_feat=edge_feat,
        node_feat=node_feat,
        n_nodes=len(node_ids),
        node_ids=node_ids,
    )


def _load_snap(file: Path) -> dict:
    names = ["src", "dst", "ts"]
    table = _read_table(file, names, header_line=0, delimiter=None, comments=_COMMENTS)
    _check(
        file, table, names, ids=(0, 1), time=2, header_line=0, delimiter=None, comments=_COMMENTS
    )
    src, dst, node_ids = _dense(
        table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), separate=False
    )
    return dict(src=src, dst=dst, ts=table[:, 2], n_nodes=len(node_ids), node_ids=node_ids)


def _npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {file} as a .npy array: {exc}") from None


def _tensor(file: Path) -> np.ndarray:
    import torch  # only for TGL's feature files: keeps `import` of this module light

    try:
        value = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"cannot read {file} as a torch tensor: {exc}".splitlines()[0]) from None
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{file} holds a {type(value).__name__}, expected a tensor [rows, dim]")
    return value.detach().to(torch.float32).numpy()
