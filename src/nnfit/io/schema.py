"""A small declarative schema language for the JSON nnfit reads back (checkpoints, saved models,
run configs).

A schema is a tree of fields (:class:`Int`, :class:`Float`, :class:`Str`, :class:`Seq`,
:class:`Obj`, :class:`Tagged`...). :func:`check` walks a parsed document against it and raises
:class:`SchemaError` at the first value that does not fit, with its path (``task.classes[2]``).
Every field can also list values it must refuse (:meth:`Field.refused`), and
:func:`fields_of` lists the fields of a document with their paths: the generated tamper test
(``tests/test_tamper_fuzz.py``) rewrites each of them, so a field added to a schema is fuzzed
without touching the test.

Documents are limited in nesting depth (:data:`MAX_DEPTH`) before they are walked, so no
crafted document can exhaust the stack.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 32  # deeper than anything nnfit writes (a run's config nests a spec: ~10 levels)
INT64_MAX = 2**63 - 1


class SchemaError(ValueError):
    """A value that does not fit its schema: ``path`` says where, the message what."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def short(value: Any) -> str:
    """A bounded, one-line repr of a JSON value for messages."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 40
    r.maxlevel, r.maxlist, r.maxdict = 2, 4, 4
    return r.repr(value)


def _kind(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def join(path: str, key: str | int) -> str:
    """``path`` extended by an object key or a list index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Field:
    """A schema node. Subclasses implement :meth:`check` and :meth:`refused`."""

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def refused(self) -> list[Any]:
        """Values this field refuses whatever the rest of the document holds (for fuzzing)."""
        return []

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        """(key, child value, child field) of a value that fits: how :func:`fields_of` descends."""
        return iter(())


def _wrong_types(*allowed: type) -> list[Any]:
    samples = [None, True, 7, 0.5, "x", [], {}]
    return [v for v in samples if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed)]


@dataclass(frozen=True)
class Int(Field):
    """An integer (not a boolean) in ``[lo, hi]``."""

    lo: int | None = None
    hi: int = INT64_MAX

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(path, f"expected an integer, got {_kind(value)}")
        if (self.lo is not None and value < self.lo) or value > self.hi:
            raise SchemaError(path, f"{short(value)} is out of range [{self.lo}, {self.hi}]")

    def refused(self) -> list[Any]:
        out = _wrong_types(int) + [self.hi + 1, 1.5]
        return out + ([self.lo - 1] if self.lo is not None else [])


@dataclass(frozen=True)
class Float(Field):
    """A number (an integer is a number too) in ``[lo, hi]`` (open at ``lo`` with ``open_lo``,
    at ``hi`` with ``open_hi``); finite unless ``inf`` allows infinities; NaN only with ``nan``
    (a metric that can be undefined)."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    inf: bool = False
    nan: bool = False

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(path, f"expected a number, got {_kind(value)}")
        huge = isinstance(value, int) and abs(value) > 2**1000  # float() would overflow
        v = math.copysign(math.inf, value) if huge else float(value)
        if math.isnan(v) and self.nan:
            return
        if math.isnan(v) or (math.isinf(v) and not self.inf):
            raise SchemaError(path, f"{value} is not a finite number")
        low = self.lo is not None and (v < self.lo or (self.open_lo and v == self.lo))
        high = self.hi is not None and (v > self.hi or (self.open_hi and v == self.hi))
        if low or high:
            bounds = f"{'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"
            raise SchemaError(path, f"{short(value)} is out of range {bounds}")

    def refused(self) -> list[Any]:
        out = _wrong_types(int, float) + ([] if self.nan else [math.nan])
        out += [] if self.inf else [math.inf, -math.inf]
        if self.lo is not None:
            out.append(self.lo if self.open_lo else self.lo - 1)
        if self.hi is not None:
            out.append(self.hi if self.open_hi else self.hi + 1)
        return out


@dataclass(frozen=True)
class Bool(Field):
    """``true`` or ``false``."""

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise SchemaError(path, f"expected true or false, got {_kind(value)}")

    def refused(self) -> list[Any]:
        return _wrong_types(bool) + [0, 1]


@dataclass(frozen=True)
class Str(Field):
    """A string: one of ``choices`` when given, matching ``pattern`` when given, at most
    ``max_len`` characters, at least ``min_len``."""

    choices: tuple[str, ...] = ()
    pattern: str | None = None
    min_len: int = 0
    max_len: int = 100_000

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(path, f"expected a string, got {_kind(value)}")
        if self.choices and value not in self.choices:
            raise SchemaError(path, f"{short(value)} is not one of: {', '.join(self.choices)}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise SchemaError(path, f"{short(value)} is not a valid value")
        if not self.min_len <= len(value) <= self.max_len:
            raise SchemaError(path, f"a string of {len(value)} characters (expected "
                                    f"{self.min_len} to {self.max_len})")

    def refused(self) -> list[Any]:
        out = _wrong_types(str) + ["x" * (self.max_len + 1)]
        if self.choices or self.pattern:
            out.append("no-such-value\x1b")
        return out


@dataclass(frozen=True)
class Maybe(Field):
    """``null`` or a value of ``inner``."""

    inner: Field

    def check(self, value: Any, path: str) -> None:
        if value is not None:
            self.inner.check(value, path)

    def refused(self) -> list[Any]:
        return [v for v in self.inner.refused() if v is not None]

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        return iter(()) if value is None else self.inner.children(value)


@dataclass(frozen=True)
class AnyOf(Field):
    """A value of one of ``options`` (e.g. a label: string, integer, number or boolean)."""

    options: tuple[Field, ...]
    what: str

    def check(self, value: Any, path: str) -> None:
        for option in self.options:
            try:
                option.check(value, path)
                return
            except SchemaError:
                continue
        raise SchemaError(path, f"expected {self.what}, got {_kind(value)}")

    def refused(self) -> list[Any]:
        return [v for v in (None, [], {}) if not self._fits(v)]

    def _fits(self, v: Any) -> bool:
        try:
            self.check(v, "")
        except SchemaError:
            return False
        return True


@dataclass(frozen=True)
class Seq(Field):
    """A list of ``item`` values, ``min_len`` to ``max_len`` long; ``unique`` refuses equal
    items (as Python compares them: ``1``, ``1.0`` and ``true`` are equal)."""

    item: Field
    min_len: int = 0
    max_len: int = 10**8
    unique: bool = False

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(path, f"expected a list, got {_kind(value)}")
        if not self.min_len <= len(value) <= self.max_len:
            want = (str(self.min_len) if self.min_len == self.max_len
                    else f"{self.min_len} to {self.max_len}")
            raise SchemaError(path, f"a list of {len(value)} items (expected {want})")
        for i, v in enumerate(value):
            self.item.check(v, join(path, i))
        if self.unique:
            seen: set = set()
            for i, v in enumerate(value):
                key = (type(v) is str, v)  # "1" and 1 differ; 1, 1.0 and True do not
                if key in seen:
                    raise SchemaError(join(path, i), f"{short(v)} appears twice")
                seen.add(key)

    def refused(self) -> list[Any]:
        out = _wrong_types(list)
        if self.min_len > 0:
            out.append([])
        return out

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        return ((i, v, self.item) for i, v in enumerate(value))


@dataclass(frozen=True)
class Obj(Field):
    """An object with exactly the keys of ``fields`` (those in ``optional`` may be absent).

    Args:
        fields: key -> field.
        optional: keys that may be absent.
        rest: the field of any other key (whose name must match ``rest_keys``); None refuses
            other keys.
        rules: checks across fields, run after every field fits: ``rule(value)`` returns
            ``(key, message)`` naming the offending key, or None.
    """

    fields: Mapping[str, Field] = field(default_factory=dict)
    optional: frozenset[str] = frozenset()
    rest: Field | None = None
    rest_keys: str = r".{1,1000}"
    rules: tuple[Callable[[dict], tuple[str, str] | None], ...] = ()

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, got {_kind(value)}")
        for key in self.fields:
            if key not in value and key not in self.optional:
                raise SchemaError(join(path, key), "missing")
        for key, v in value.items():
            f = self.fields.get(key)
            if f is None:
                if self.rest is None or not re.fullmatch(self.rest_keys, key):
                    raise SchemaError(join(path, short(key) if not _plain(key) else key), "unexpected key")
                f = self.rest
            f.check(v, join(path, key))
        for rule in self.rules:
            problem = rule(value)
            if problem is not None:
                raise SchemaError(join(path, problem[0]) if problem[0] else path, problem[1])

    def refused(self) -> list[Any]:
        return _wrong_types(dict)

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        for key, v in value.items():
            f = self.fields.get(key, self.rest)
            if f is not None:
                yield key, v, f


def _plain(key: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_ .-]{1,100}", key) is not None


@dataclass(frozen=True)
class Tagged(Field):
    """An object whose ``tag`` key picks its schema among ``variants`` (a task by its name,
    a model spec by its model name)."""

    tag: str
    variants: Mapping[str, Field]

    def _variant(self, value: Any, path: str) -> Field:
        if not isinstance(value, dict):
            raise SchemaError(path, f"expected an object, got {_kind(value)}")
        if self.tag not in value:
            raise SchemaError(join(path, self.tag), "missing")
        name = value[self.tag]
        if not isinstance(name, str) or name not in self.variants:
            raise SchemaError(join(path, self.tag),
                              f"{short(name)} is not one of: {', '.join(self.variants)}")
        return self.variants[name]

    def check(self, value: Any, path: str) -> None:
        self._variant(value, path).check(value, path)

    def refused(self) -> list[Any]:
        return _wrong_types(dict) + [{self.tag: "no-such-kind"}]

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        return self._variant(value, "").children(value)


@dataclass(frozen=True)
class Pick(Field):
    """One of ``options``, chosen by ``choose(value)`` (a key of ``options``), e.g. the run
    config of ``nnfit train`` or of the Python API."""

    choose: Callable[[Any], str]
    options: Mapping[str, Field]

    def check(self, value: Any, path: str) -> None:
        self.options[self.choose(value)].check(value, path)

    def refused(self) -> list[Any]:
        return [v for v in _wrong_types(dict) if all(v in o.refused() for o in self.options.values())]

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        return self.options[self.choose(value)].children(value)


@dataclass(frozen=True)
class Lazy(Field):
    """A field defined later (a recursive schema: a model spec holds model specs)."""

    get: Callable[[], Field]

    def check(self, value: Any, path: str) -> None:
        self.get().check(value, path)

    def refused(self) -> list[Any]:
        return self.get().refused()

    def children(self, value: Any) -> Iterator[tuple[str | int, Any, Field]]:
        return self.get().children(value)


@dataclass(frozen=True)
class Json(Field):
    """Any JSON value (its depth is bounded by :func:`check_depth`); ``finite`` refuses NaN
    and infinities anywhere inside."""

    finite: bool = False

    def check(self, value: Any, path: str) -> None:
        if not self.finite:
            return
        stack = [(path, value)]
        while stack:
            p, v = stack.pop()
            if isinstance(v, float) and not math.isfinite(v):
                raise SchemaError(p, f"{v} is not a finite number")
            if isinstance(v, dict):
                stack.extend((join(p, k), x) for k, x in v.items())
            elif isinstance(v, list):
                stack.extend((join(p, i), x) for i, x in enumerate(v))


def check_depth(doc: Any, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a document nested deeper than ``max_depth`` (iteratively: no recursion).

    Raises:
        SchemaError: naming the path where the limit is passed.
    """
    stack = [(doc, 0, "")]
    while stack:
        v, depth, path = stack.pop()
        if isinstance(v, (dict, list)):
            if depth >= max_depth:
                raise SchemaError(path, f"nested deeper than {max_depth} levels")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            stack.extend((x, depth + 1, join(path, k)) for k, x in items)


def check(doc: Any, schema: Field, path: str = "") -> None:
    """Check ``doc`` against ``schema`` (its depth first).

    Raises:
        SchemaError: the first value that does not fit, with its path.
    """
    check_depth(doc)
    schema.check(doc, path)


def fields_of(doc: Any, schema: Field, path: tuple = ()) -> Iterator[tuple[tuple, Field]]:
    """Every value of a document that fits ``schema``, as (key path, field), parents first."""
    yield path, schema
    for key, value, child in schema.children(doc):
        yield from fields_of(value, child, (*path, key))
