"""One writer per run directory: an exclusive OS lock that dies with its holder.

Every writer of a run directory holds :func:`hold_run_dir` for as long as it writes there:
``nnfit train`` (``--out``, ``--resume`` and the default ``runs/NAME-N``) and
``fit(run_dir=..., resume=...)``. Readers (``evaluate``, ``predict``, ``inspect``, ``load``)
never take it. A second writer is refused at once, in one line naming the holder's pid.

The lock is ``flock`` on ``RUN/.nnfit.lock``, a file holding the holder's pid. The kernel
drops a ``flock`` when its holder exits however it exits, so a SIGKILLed run leaves at most
the file, never a held lock. The holder deletes the file as it lets go, and whoever locks a
file checks that it is still the one under that name (else it locks the new one), so a
deleted file can never be locked by two processes. Within one thread the lock is re-entrant:
``nnfit train`` holds it around ``fit`` and the test-set files it writes afterwards.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .layout import LOCK_FILE


class RunDirInUse(ConfigError):
    """Another process (or thread) is writing the run directory."""


@dataclass
class _Held:
    fd: int
    thread: tuple[int, int]  # (pid, thread id): a forked child never inherits a hold
    depth: int = 1
    made: list[Path] = field(default_factory=list)  # directories created for this hold
    taken_over: bool = False  # the lock file held a pid: a writer died holding the directory


_held: dict[tuple[int, int], _Held] = {}  # (st_dev, st_ino) of a run directory -> its hold
_registry = threading.Lock()


@contextmanager
def hold_run_dir(path: str | Path, *, create: bool = True, made: Sequence[Path] = ()) -> Iterator[bool]:
    """Hold the exclusive lock of the run directory ``path`` for the ``with`` block.

    Args:
        path: the run directory.
        create: create ``path`` (and missing parents) when it does not exist; with False a
            missing directory is not locked (there is nothing in it to protect) and the
            block gets False.
        made: directories the caller has just created for this run, deepest first (as
            ``create`` would have): removed again like those.

    Directories made for the hold are removed again at its end when nothing was written
    into them, so a run that fails while starting leaves nothing behind.

    Yields:
        True when the lock is held.

    Raises:
        RunDirInUse: another process or thread holds it (the message names the pid).
        ConfigError: ``path`` is a file.
        OSError: the directory or its lock file cannot be created.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d, hold_run_dir(Path(d) / "run") as held:
        ...     held
        True
    """
    d, made = Path(path), list(made)
    if not d.is_dir():
        if not create:
            yield False
            return
        made = _make_dirs(d)
    st = d.stat()
    key, me = (st.st_dev, st.st_ino), (os.getpid(), threading.get_ident())
    with _registry:
        hold = _held.get(key)
        if hold is not None and hold.thread == me:
            hold.depth += 1
    if hold is None or hold.thread != me:
        fd, taken_over = _acquire(d, made)
        hold = _Held(fd, me, made=made, taken_over=taken_over)
        with _registry:
            _held[key] = hold
    try:
        yield True
    finally:
        hold.depth -= 1
        if hold.depth == 0:
            with _registry:
                del _held[key]
            _release(d, hold)


def _make_dirs(d: Path) -> list[Path]:
    """Create ``d`` and its missing parents; returns those this call created, deepest first."""
    missing = [p for p in (d, *d.parents) if not p.exists()]
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{d} exists and is not a directory") from None
    return missing


def _acquire(d: Path, made: list[Path]) -> tuple[int, bool]:
    """Lock ``d/LOCK_FILE``; returns its descriptor, the file holding this process's pid, and
    whether the file held the pid of a writer that died holding the lock."""
    lock = d / LOCK_FILE
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:  # name the run directory asked for, not the lock file inside it
            _remove_made(made)
            raise type(e)(e.errno, f"{e.strerror} (a run directory must be writable)", str(d)) from None
        except BaseException:
            _remove_made(made)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = "another thread of this process" if holder == os.getpid() else "another nnfit process"
            raise RunDirInUse(f"{d} is in use by {who} (pid {holder or 'unknown'})") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(lock)
            same = (current.st_dev, current.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder deleted that file as it let go: lock the one there now
    # A live holder deletes the file as it lets go: a pid left in it is a dead writer's.
    taken_over = os.pread(fd, 32, 0).strip().isdigit()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, taken_over


def taken_over(path: str | Path) -> bool:
    """Whether this thread's hold of the run directory ``path`` took the lock over from an
    nnfit writer that died holding it (SIGKILL, a crash): a sign that nnfit wrote there, even
    before any of the run's files (see :func:`nnfit.io.layout.check_overwrite`).
    """
    try:
        st = Path(path).stat()
    except OSError:
        return False
    with _registry:
        hold = _held.get((st.st_dev, st.st_ino))
    return hold is not None and hold.thread == (os.getpid(), threading.get_ident()) and hold.taken_over


def _holder(fd: int) -> int | None:
    """The pid in a lock file someone holds (it writes it just after locking: wait briefly)."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


def _release(d: Path, hold: _Held) -> None:
    """Delete the lock file while still holding it, drop the lock, and remove the directories
    made for this hold if nothing was written into them."""
    try:
        (d / LOCK_FILE).unlink()
    except OSError:  # removed or unwritable: the lock itself still goes with the descriptor
        pass
    os.close(hold.fd)
    _remove_made(hold.made)


def _remove_made(made: list[Path]) -> None:
    for p in made:
        try:
            p.rmdir()
        except OSError:  # something was written there (or someone else created it meanwhile)
            return
