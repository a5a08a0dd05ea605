"""Property-based bad input: generated malformed CSV, Parquet and config files never crash nnfit.

Every CSV/Parquet example goes through the readers and the CLI's train path in-process
(``nnfit.cli.main`` with one epoch of a 4-unit MLP, then ``predict`` when training succeeded);
every config example through the config reader, ``key=value`` overrides and the name checks,
directly and through ``main``. The properties: the answer is success or one
:class:`~nnfit.errors.NnfitError` line (exit status 2), never another exception; the input
file's bytes and mtime are unchanged; a failed run leaves no directory behind; no example takes
more than a few seconds.

Hypothesis runs derandomized (a fixed seed) without its example database, so CI sees the same
examples every time and nothing is written to the working directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import tempfile
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnfit.cli import main, split_items
from nnfit.cli.train import _config
from nnfit.config import SECTIONS, check_names, make_run_config, read_config_file
from nnfit.data.columns import read_columns
from nnfit.data.read import read_table
from nnfit.errors import ConfigError, NnfitError

EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
SECONDS_PER_EXAMPLE = 20  # "no hang": far above the ~50 ms an example takes


class Hang(BaseException):
    """An example ran too long (a BaseException, so nnfit's own handlers cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: int = SECONDS_PER_EXAMPLE):
    def alarm(signum, frame):
        raise Hang(f"example took over {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_line(e: NnfitError) -> str:
    text = str(e)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    assert "Traceback" not in text
    return text


def run_cli(*argv) -> tuple[int, str]:
    """``main(argv)`` in-process with stdout/stderr captured: (status, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, err.getvalue()


def assert_cli_error(status: int, err: str) -> None:
    assert status == 2, (status, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnfit: error: "), err
    assert "Traceback" not in err


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("NNFIT_DEBUG", raising=False)


# ------------------------------------------------------------------------------ tables
TOKENS = ["inf", "-inf", "+inf", "Infinity", "nan", "NaN", "", " ", "abc", "1e400", "-1e39", "3.5e38",
          "99999999999999999999999", "1,5", '"1,5"', "0x1F", "true", "NULL", "N/A", "-", "1e",
          "٣", "\t", "1 2", '"', "'", "\\", "\x00", "1\x002"]
BAD_BYTES = [b"\xff", b"\xe9", b"\xc3\x28", b"\x80", b"\xef\xbb\xbf", b"\x00", b"\r", b"\x1a"]
KINDS = ["truncate", "insert", "ragged_add", "ragged_drop", "quote", "nul", "non_utf8",
         "dup_header", "empty_header", "token", "token_label", "header_only", "empty",
         "blank_only", "blank_lines", "crlf", "drop_label", "one_class", "delete_line", "bom",
         "swap_header", "semicolons"]

cell = st.one_of(st.integers(-1000, 1000).map(str),
                 st.floats(-1e6, 1e6, allow_nan=False, width=32).map(lambda v: f"{v:.6g}"))


@st.composite
def base_table(draw) -> list[list[str]]:
    """A small well-formed table: 1-3 numeric features and a label (text or numeric)."""
    k = draw(st.integers(1, 3))
    n = draw(st.integers(1, 9))
    labels = draw(st.sampled_from([["yes", "no"], ["a", "b", "c"], ["0", "1"], None]))
    rows = []
    for _ in range(n):
        row = [draw(cell) for _ in range(k)]
        row.append(draw(st.sampled_from(labels)) if labels else draw(cell))
        rows.append(row)
    return [[f"f{i}" for i in range(k)] + ["label"], *rows]


mutation = st.tuples(st.sampled_from(KINDS), st.integers(0, 10**6), st.binary(min_size=1, max_size=4),
                     st.sampled_from(TOKENS), st.sampled_from(BAD_BYTES))


def render(table: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in table) + "\n").encode()


def mutate(table: list[list[str]], data: bytes, m: tuple) -> tuple[list[list[str]], bytes]:
    """Apply one mutation; the table form is kept while mutations can still work on cells."""
    kind, at, blob, token, bad = m
    rows = [list(r) for r in table]
    r = 1 + at % max(1, len(rows) - 1) if len(rows) > 1 else 0
    c = at % len(rows[0]) if rows and rows[0] else 0
    if kind == "ragged_add" and rows:
        rows[r].append("9")
    elif kind == "ragged_drop" and rows and rows[r]:
        rows[r].pop()
    elif kind == "dup_header" and rows and len(rows[0]) > 1:
        rows[0][c] = rows[0][(c + 1) % len(rows[0])]
    elif kind == "empty_header" and rows and rows[0]:
        rows[0][c] = ""
    elif kind == "swap_header" and rows and len(rows[0]) > 1:
        rows[0] = rows[0][::-1]
    elif kind == "token" and len(rows) > 1 and len(rows[r]) > 1:
        rows[r][at % (len(rows[r]) - 1)] = token
    elif kind == "token_label" and len(rows) > 1 and rows[r]:
        rows[r][-1] = token
    elif kind == "header_only":
        rows = rows[:1]
    elif kind == "drop_label" and rows:
        rows = [row[:-1] for row in rows]
    elif kind == "one_class":
        rows = rows[:1] + [row[:-1] + ["same"] for row in rows[1:]]
    elif kind == "delete_line" and len(rows) > 1:
        del rows[r]
    elif kind in ("truncate", "insert", "quote", "nul", "non_utf8", "empty", "blank_only", "blank_lines",
                  "crlf", "bom", "semicolons"):
        return rows, _byte_mutation(kind, data, at, blob, bad)
    return rows, render(rows)


def _byte_mutation(kind: str, data: bytes, at: int, blob: bytes, bad: bytes) -> bytes:
    i = at % (len(data) + 1)
    return {
        "truncate": data[:i],
        "insert": data[:i] + blob + data[i:],
        "quote": data[:i] + b'"' + data[i:],
        "nul": data[:i] + b"\x00" + data[i:],
        "non_utf8": data[:i] + bad + data[i:],
        "empty": b"",
        "blank_only": b"\n" * (1 + at % 4),
        "blank_lines": data[:i] + b"\n\n" + data[i:],
        "crlf": data.replace(b"\n", b"\r\n"),
        "bom": b"\xef\xbb\xbf" + data,
        "semicolons": data.replace(b",", b";"),
    }[kind]


@st.composite
def malformed_csv(draw) -> tuple[bytes, bool]:
    """(file bytes, impute?): a base table with one to three mutations."""
    table = draw(base_table())
    data = render(table)
    for m in draw(st.lists(mutation, min_size=1, max_size=3)):
        table, data = mutate(table, data, m)
    return data, draw(st.booleans())


def check_table_file(p: Path, impute: bool) -> None:
    """The properties for one data file (CSV or Parquet) in an otherwise empty directory."""
    before = snapshot(p)
    for read in (lambda: read_table(p, exclude="label", allow_missing=impute),
                 lambda: read_columns(p, allow_missing=impute, exclude="label")):
        try:
            read()
        except NnfitError as e:
            one_line(e)
    run = p.parent / "run"
    status, err = run_cli("train", p, "--target", "label", "--epochs", 1, "--hidden", 4,
                          "--batch-size", 4, "--device", "cpu", "--quiet", "--out", run,
                          *([] if impute else ["--no-impute"]))
    if status == 0:
        # only warnings (filled gaps, dropped ids, stray text), each one printable line
        lines = err.splitlines()
        assert (run / "model.json").is_file() and all(
            ln.startswith("nnfit: warning: ") and ln.isprintable() for ln in lines), err
        pred = p.parent / "pred.csv"
        status, err = run_cli("predict", run, p, "-o", pred)
        assert status == 0 and pred.is_file(), err  # the file it trained on always predicts
    else:
        assert_cli_error(status, err)
        assert sorted(os.listdir(p.parent)) == [p.name], "a failed run left files behind"
    assert snapshot(p) == before, "the input file changed"


def test_malformed_csv_files_are_refused_in_one_line_or_accepted():
    seen: list[bytes] = []
    outcomes = {"ok": 0, "refused": 0}

    @FUZZ
    @given(malformed_csv())
    def check(example):
        data, impute = example
        seen.append(data)
        with tempfile.TemporaryDirectory() as d, time_limit():
            p = Path(d) / "data.csv"
            p.write_bytes(data)
            check_table_file(p, impute)
            outcomes["ok" if (Path(d) / "run").exists() else "refused"] += 1

    check()
    assert len(seen) >= EXAMPLES
    # Both branches are exercised: the generator is not all junk, nor all harmless.
    assert outcomes["ok"] >= 25 and outcomes["refused"] >= 250, outcomes


@st.composite
def malformed_parquet(draw) -> tuple[bytes, bool]:
    """A valid Parquet file of a small table (with nulls, inf, NaN, text or duplicate names),
    then possibly truncated or with bytes overwritten."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(1, 8))
    special = st.sampled_from([None, math.inf, -math.inf, math.nan, 1e39, 0.5, 1.0, -2.0])
    f0 = draw(st.lists(special, min_size=n, max_size=n))
    labels = draw(st.lists(st.sampled_from(["yes", "no", None]), min_size=n, max_size=n))
    names = draw(st.sampled_from([["f0", "label"], ["label", "label"], ["", "label"], ["f0", "y"]]))
    buf = io.BytesIO()
    pq.write_table(pa.table([pa.array(f0, pa.float64()), pa.array(labels, pa.string())], names=names), buf)
    data = buf.getvalue()
    cut = draw(st.sampled_from(["none", "truncate", "overwrite"]))
    at = draw(st.integers(0, len(data)))
    if cut == "truncate":
        data = data[:at]
    elif cut == "overwrite":
        blob = draw(st.binary(min_size=1, max_size=8))
        data = data[:at] + blob + data[at + len(blob):]
    return data, draw(st.booleans())


def test_malformed_parquet_files_are_refused_in_one_line_or_accepted():
    seen = []

    @settings(FUZZ, max_examples=150)
    @given(malformed_parquet())
    def check(example):
        data, impute = example
        seen.append(data)
        with tempfile.TemporaryDirectory() as d, time_limit():
            p = Path(d) / "data.parquet"
            p.write_bytes(data)
            check_table_file(p, impute)

    check()
    assert len(seen) >= 150


# ------------------------------------------------------------------------------ configs
KEYS = sorted(f.name for cls in SECTIONS for f in fields(cls))
JUNK_KEYS = ["", " ", "epochz", "EPOCHS", "lr ", "model.hidden", "train", "data", "model", "__class__",
             "hidden\n", "é", "0", "-epochs"]
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 300), st.just(-(10**400)),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-3, 0.5, 0.999, 1.0, 2.0]),
    st.text(max_size=12), st.sampled_from(["adam", "sgd", "cosine", "plateau", "mlp", "relu", "auto",
                                           "cpu", "cuda", "cuda:x", "64,32", "true", "none", "1e400",
                                           "nan", "-1", "0", "iris", "regression", "bce"]))
junk = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=8)
flat_doc = st.dictionaries(st.sampled_from(KEYS + JUNK_KEYS), junk, max_size=6)
config_doc = st.one_of(
    flat_doc,
    st.fixed_dictionaries({}, optional={"model": flat_doc, "train": flat_doc, "data": flat_doc}),
    junk,  # a document that is not a mapping
)
override = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS + JUNK_KEYS[:6]),
                     st.one_of(st.text(max_size=8), scalar.map(str)))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()
                               if x is not None) + "}"
    return '""'


def to_toml(doc) -> str:
    """A small TOML writer (tomllib reads only); values TOML cannot hold (None) are left out and
    a non-mapping document comes out as invalid TOML, which is also a case to answer."""
    if not isinstance(doc, dict):
        return _toml_value(doc) + "\n"
    return "".join(f"{json.dumps(str(k))} = {_toml_value(v)}\n" for k, v in doc.items() if v is not None)


@st.composite
def malformed_config(draw) -> tuple[str, bytes, list[str]]:
    """(suffix, file bytes, key=value overrides)."""
    suffix = draw(st.sampled_from([".yaml", ".yml", ".toml", ".json"]))
    if draw(st.integers(0, 9)) == 0:  # syntax junk
        text = draw(st.sampled_from(["epochs: [\n", "a = = 1\n", "{\"lr\": }", "- - -\n  x: :\n",
                                     "!!python/object:os.system {}\n", "[model\nhidden = 1\n",
                                     "a: &x [*x]\n", "\x00\x01", "epochs: 1\n\tlr: 2\n"]))
        data = (text + draw(st.text(max_size=20))).encode("utf-8", "surrogatepass")
    else:
        doc = draw(config_doc)
        if suffix == ".toml":
            text = to_toml(doc)
        elif suffix == ".json":
            text = json.dumps(doc)
        else:
            text = yaml.safe_dump(doc, allow_unicode=draw(st.booleans()))
        data = text.encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 9)) == 0:
            data = data[:draw(st.integers(0, len(data)))] + draw(st.sampled_from(BAD_BYTES))
    return suffix, data, draw(st.lists(override, max_size=3))


def test_malformed_configs_only_raise_one_line_config_errors():
    seen = []
    outcomes = {"ok": 0, "refused": 0}

    @FUZZ
    @given(malformed_config())
    def check(example):
        suffix, data, overrides = example
        seen.append(data)
        with tempfile.TemporaryDirectory() as d, time_limit():
            p = Path(d) / f"run{suffix}"
            p.write_bytes(data)
            before = snapshot(p)
            try:  # the config path of `nnfit train`, step by step
                values = read_config_file(p)
                values.update(split_items(overrides)[1])
                check_names(make_run_config(values))
                outcomes["ok"] += 1
            except ConfigError as e:
                one_line(e)
                outcomes["refused"] += 1
            # ...and through the command: refused, or (valid config) the missing data file.
            missing = Path(d) / "missing.csv"
            status, err = run_cli("train", missing, "--target", "label", "--config", p, *overrides,
                                  "--quiet", "--out", Path(d) / "run")
            assert_cli_error(status, err)
            assert sorted(os.listdir(d)) == [p.name]
            assert snapshot(p) == before

    check()
    assert len(seen) >= EXAMPLES
    assert outcomes["ok"] >= 10 and outcomes["refused"] >= 250, outcomes


def test_config_command_path_matches_the_step_by_step_path(tmp_path):
    """The fuzzed steps are the ones ``nnfit train`` runs (``_config``), not a look-alike."""
    from nnfit.cli import build_parser

    (tmp_path / "c.yaml").write_text("epochs: 3\noptimizer: sgd\n")
    args, _ = build_parser().parse_known_args(["train", "d.csv", "lr=0.5", "--config",
                                               str(tmp_path / "c.yaml")])
    cfg = _config(args)
    assert (cfg.train.epochs, cfg.train.optimizer, cfg.train.lr) == (3, "sgd", 0.5)
    args, _ = build_parser().parse_known_args(["train", "d.csv", "optimizer=sgdd", "--config",
                                               str(tmp_path / "c.yaml")])
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):
        _config(args)
