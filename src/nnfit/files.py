"""Crash-safe files: atomic writes, verified bundles of files, and their manifests.

Nothing here imports torch or unpickles anything; it moves bytes.

* :func:`atomic_write_bytes` writes a temporary file in the target's directory, flushes and
  fsyncs it, renames it over the target and fsyncs the directory: after a crash the target
  holds either its old bytes or the new ones, never a mix.
* A **bundle** is a directory of files plus ``manifest.json`` holding the format version,
  the size and SHA-256 of every file, and a checksum of the manifest itself.
  :func:`write_bundle` builds it under a temporary name and commits it with one rename, so a
  bundle directory either exists complete or not at all. :func:`read_bundle` checks every
  file as it reads it and names the first damaged one (safetensors alone would load a flipped bit silently).
* Temporaries are named ``.TARGET.nnfit-PID-RANDOM.tmp``: hidden, recognisably nnfit's, and
  naming the writing process. :func:`clean_temporaries` removes only such names whose writer
  is gone (a killed writer's leftovers), never a user's ``.x.tmp`` nor a live writer's file.
* Every failure names the path the caller asked for, never the temporary, and new files and
  directories get the usual permissions (0666 / 0777 less the umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

from .errors import CheckpointError

FORMAT_VERSION = 2  # of manifests and everything a run writes; readers refuse newer ones
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"
# .TARGET.nnfit-PID-RANDOM.tmp: the only names clean_temporaries ever removes
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.nnfit-(?P<pid>[1-9][0-9]{0,9})-[0-9a-f]{8}\.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # e.g. fsync of a directory unsupported: the rename itself stays atomic
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync one file (no rename): the unit every write here is built from."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def temporary_name(target: str) -> str:
    """``.TARGET.nnfit-PID-RANDOM.tmp``, the name of a temporary that will become ``target``."""
    return f".{target}.nnfit-{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}"


def _new_temporary(target: Path, directory: bool = False) -> Path:
    """Create an empty temporary file (or directory) beside ``target``, after removing the
    temporaries of ``target`` that a killed writer left there.

    Created with mode 0666 (0777) like any new file, so the umask decides, as for every other
    tool (``mkstemp``/``mkdtemp`` would make every output 0600/0700).
    """
    try:
        parent = target.parent
        if not parent.is_dir():
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:  # a file where the directory should be
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent)) from None
        clean_temporaries(parent, target.name)
        while True:
            tmp = parent / temporary_name(target.name)
            try:
                if directory:
                    os.mkdir(tmp, 0o777)
                else:
                    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                return tmp
            except FileExistsError:  # 32 random bits taken by this very process: draw again
                continue
    except OSError as e:
        raise _naming(e, target, None) from e


def _naming(error: OSError, target: Path, tmp: Path | None) -> OSError:
    """``error`` as raised for ``target``: the path the caller asked for, not the temporary
    (a file inside a temporary directory is named inside ``target``)."""
    where = target
    if tmp is not None and error.filename:
        try:
            where = target / Path(error.filename).relative_to(tmp)
        except ValueError:
            pass
    # OSError(errno, ...) picks the subclass (PermissionError, IsADirectoryError, ...)
    return OSError(error.errno, error.strerror or str(error), str(where))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename.

    Temporaries of ``path`` left by a killed writer are removed first.

    Raises:
        OSError: naming ``path`` (never the temporary): a full disk, a directory that cannot
            be written or is a file, ``path`` being a directory. ``path`` is then unchanged.
    """
    path = Path(path)
    tmp = _new_temporary(path)
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path, tmp) from e
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(kind: str, files: dict[str, bytes]) -> bytes:
    """The manifest of ``files``: format, kind, size and SHA-256 of each, self-checksummed."""
    body = {"format": FORMAT_VERSION, "kind": kind,
            "files": {name: {"bytes": len(data), "sha256": sha256_bytes(data)}
                      for name, data in files.items()}}
    body["self_sha256"] = sha256_bytes(_canonical(body))
    return _render(body)


def _render(body: dict[str, Any]) -> bytes:
    """The one byte form of a manifest: any other bytes mean the file was altered."""
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in body.items() if k != "self_sha256"}, sort_keys=True).encode()


def write_files(directory: str | Path, kind: str, files: dict[str, bytes]) -> None:
    """Write ``files`` into an existing or new ``directory`` one atomic rename at a time, then
    the manifest; a crash part-way leaves a manifest that no longer matches, which
    :func:`verify_bundle` reports, naming the file."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(d / name, data)
    atomic_write_bytes(d / MANIFEST, manifest_bytes(kind, files))


def write_bundle(target: str | Path, kind: str, files: dict[str, bytes]) -> Path:
    """Create the directory ``target`` holding ``files`` and their manifest, all or nothing.

    The files are written and fsynced in a temporary directory (:func:`temporary_name`)
    beside ``target``, which is then renamed to ``target`` (which must not exist) and the
    parent fsynced.

    Raises:
        OSError: naming ``target`` or a file inside it, never the temporary.
    """
    target = Path(target)
    tmp = _new_temporary(target, directory=True)
    try:
        for name, data in files.items():
            _write_file(tmp / name, data)
        _write_file(tmp / MANIFEST, manifest_bytes(kind, files))
        fsync_dir(tmp)
        os.rename(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise _naming(e, target, tmp) from e
        raise
    fsync_dir(target.parent)
    return target


def remove_bundle(path: str | Path) -> None:
    """Delete a bundle directory: renamed to a temporary name first (one atomic step), so a
    kill part-way never leaves a half-deleted directory under a committed name."""
    path = Path(path)
    doomed = path.with_name(temporary_name(path.name))
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The checked manifest of a bundle directory.

    Raises:
        CheckpointError: missing, unreadable or altered manifest, or a newer format.
    """
    p = Path(directory) / MANIFEST
    if not p.is_file():
        raise CheckpointError(f"{p}: manifest missing (not a complete nnfit save)")
    try:
        raw = p.read_bytes()
        body = parse_json(raw, p)
        ok = (isinstance(body, dict) and body.get("self_sha256") == sha256_bytes(_canonical(body))
              and raw == _render(body))
    except (CheckpointError, ValueError, TypeError, RecursionError):  # rendering a parsed body fails too
        ok = False
    if not ok or not isinstance(body.get("files"), dict):
        raise CheckpointError(f"{p}: manifest is damaged")
    fmt = body.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise CheckpointError(f"{p}: written by a newer nnfit (format {fmt}; this one reads up to "
                              f"{FORMAT_VERSION}): upgrade nnfit")
    return body


def read_bundle(directory: str | Path, kind: str | None = None,
                required: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file of a bundle, each read once and checked against the manifest.

    Args:
        directory: the bundle.
        kind: the kind the manifest must name, if given.
        required: files the manifest must list.

    Raises:
        CheckpointError: naming the missing, truncated, extended or altered file.
    """
    d = Path(directory)
    body = read_manifest(d)
    if kind is not None and body.get("kind") != kind:
        raise CheckpointError(f"{d}: holds a {body.get('kind')!r}, not a {kind!r}")
    for name in required:
        if name not in body["files"]:
            raise CheckpointError(f"{d / MANIFEST}: does not list {name}")
    out = {}
    for name, entry in body["files"].items():
        p = d / name
        if not p.is_file():
            raise CheckpointError(f"{p}: missing")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{p}: unreadable ({e.strerror})") from None
        expected = entry.get("bytes") if isinstance(entry, dict) else None
        if len(data) != expected:
            raise CheckpointError(f"{p}: damaged (size {len(data)}, manifest says {expected})")
        if sha256_bytes(data) != entry.get("sha256"):
            raise CheckpointError(f"{p}: damaged (SHA-256 does not match the manifest)")
        out[name] = data
    return out


def verify_bundle(directory: str | Path, kind: str | None = None) -> None:
    """Check every file of a bundle against its manifest (see :func:`read_bundle`)."""
    read_bundle(directory, kind)


def clean_temporaries(directory: str | Path, target: str | None = None) -> list[str]:
    """Remove the temporaries that killed nnfit writers left in ``directory``.

    Only names nnfit writes (``.TARGET.nnfit-PID-RANDOM.tmp``) whose writing process no
    longer exists are removed: a user's ``.x.tmp`` and the temporary of a writer still at work
    (another process, or another thread of this one) stay.

    Args:
        directory: where to look (a missing directory holds nothing).
        target: only the temporaries of this file or directory name; default: all.

    Returns:
        The names removed.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = _TEMPORARY.fullmatch(p.name)
        if m is None or (target is not None and m["target"] != target) or _alive(int(m["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts until its parent reaps it)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):  # no such pid can exist
        return False
    return True


def parse_json(data: bytes, source: str | Path) -> Any:
    """Parse a JSON file's bytes.

    Raises:
        CheckpointError: ``SOURCE: not valid JSON``, for any failure: bytes that are not UTF-8,
            not JSON, or nested too deeply for the parser (a RecursionError).
    """
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{source}: not valid JSON") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """Load a JSON file, turning every failure into a CheckpointError naming it."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: {what} not found")
    return parse_json(p.read_bytes(), p)
