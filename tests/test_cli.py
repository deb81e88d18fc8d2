"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest


def tgpipe(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tgpipe", *args], capture_output=True, text=True, cwd=cwd
    )


def test_dag_default_prints_bound():
    r = tgpipe("dag")
    assert r.returncode == 0, r.stderr
    assert "nodes          2358" in r.stdout
    assert "3.425 ms/batch, set by gpu work" in r.stdout


def test_dag_writes_graphml(tmp_path):
    out = tmp_path / "dag.graphml"
    r = tgpipe(
        "dag", "--semantics", "data_parallel", "--gpus", "2", "--batches", "10", "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith("<?xml")


def test_help_on_each_command():
    for cmd in ([], ["dag"], ["profiles"]):
        r = tgpipe(*cmd, "--help")
        assert r.returncode == 0 and "usage: tgpipe" in r.stdout


def test_profiles_lists_builtin():
    r = tgpipe("profiles")
    assert "gpu-illustrative" in r.stdout and "illustrative" in r.stdout


def _profile_file(tmp_path, mutate):
    from tgpipe.dag import load_profile

    data = load_profile("gpu-illustrative").to_dict()
    mutate(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--semantics", "ring"], "unknown semantics 'ring'"),
        (["--gpus", "0"], "expected an integer >= 1, got 0"),
        (["--profile", "nowhere.json"], "no profile 'nowhere.json'"),
        (["--memory", "disk"], "invalid choice"),
        ("unknown-op", "unknown op 'FOO'"),
        ("negative", "ops.FWD.median must be >= 0"),
        ("missing", "missing cost of op 'STEP'"),
        ("zero-bandwidth", "links.inter.bandwidth must be > 0"),
        ("not-json", "is not valid JSON"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, args, message):
    mutations = {
        "unknown-op": lambda d: d["ops"].update(FOO={"median": 1}),
        "negative": lambda d: d["ops"]["FWD"].update(median=-0.1),
        "missing": lambda d: d["ops"].pop("STEP"),
        "zero-bandwidth": lambda d: d["links"]["inter"].update(bandwidth=0),
    }
    if args == "not-json":
        path = tmp_path / "p.json"
        path.write_text("{")
        args = ["--profile", str(path)]
    elif isinstance(args, str):
        args = ["--profile", _profile_file(tmp_path, mutations[args])]
    out = tmp_path / "dag.graphml"
    r = tgpipe("dag", *args, "--out", str(out))
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_unwritable_output_is_one_line(tmp_path):
    r = tgpipe("dag", "--batches", "3", "--out", str(tmp_path / "no" / "dir" / "dag.json"))
    assert r.returncode == 2 and "cannot write" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
