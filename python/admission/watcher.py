"""`ConfigWatcher`: reloads a configuration (a `ConcurrencyManager`'s) when its file changes.

Made by ``manager.watch()``. It knows nothing of the manager: it is given the function that
puts a configuration in force and the one that tells which is in force.

A thread polls the file's modification time (and size and inode, so that an editor's
save-by-rename is seen too); polling, not inotify, because it works the same everywhere and
costs one ``stat`` per interval.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from admission._validate import blocking_timeout, duration_seconds
from admission.config import Config
from admission.errors import ConfigError

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import ExceptionGroup

__all__ = ["ConfigWatcher"]

logger = logging.getLogger("admission.config")

_Signature = tuple[int, int, int] | None


def _signature(path: Path) -> _Signature:
    try:
        st = path.stat()
    except OSError:
        return None  # missing for a moment (being replaced): compare again next time
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ConfigWatcher:
    """Polls ``path`` every ``interval`` seconds; on a change, loads it and passes it to
    ``reload`` (which puts it in force, or raises and changes nothing).

    ``in_force()`` returns the configuration in force, or None once there is nothing to
    reload any more (the manager was garbage collected): then the thread ends. An
    ``ExceptionGroup`` from ``reload`` means the configuration went in force but some of the
    resources that follow it failed: it counts as a reload and as an error.

    >>> import admission as adm, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "admission.toml"
    >>> _ = path.write_text('[limits.rag]\\nconcurrency = 2\\n')
    >>> manager = adm.ConcurrencyManager.from_file(path, env=False)
    >>> with manager.watch(interval=60) as watcher:       # a thread, stopped on exit
    ...     _ = path.write_text('[limits.rag]\\nconcurrency = 30\\n')
    ...     watcher.check()                               # what the thread does each interval
    ...     manager.semaphore("rag").limit
    True
    30

    The thread reloads a changed file once it has held still for one interval (so a file
    caught half-written is never loaded). A file that fails to load is logged as a warning and
    passed to ``on_error``; the limits in force stay until a good file arrives.

    A file that defines no limits (empty, blank or only comments: what a writer that truncates
    and then pauses, ``render > admission.toml``, leaves for a while) is refused with a
    `ConfigError` while limits are in force, so that it never removes every limit by accident;
    ``allow_empty=True`` lets such a file through (every limit removed).
    ``on_reload(config)`` and ``on_error(exc)`` run in the watcher's thread (or the caller of
    `check`).
    """

    def __init__(
        self,
        reload: Callable[[Config], object],
        path: str | os.PathLike[str],
        *,
        in_force: Callable[[], Config | None],
        interval: float | str = 1.0,
        env: bool | Mapping[str, str] = True,
        on_reload: Callable[[Config], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
        allow_empty: bool = False,
    ) -> None:
        interval = duration_seconds(interval, "interval", positive=True)
        self._reload = reload
        self._in_force = in_force
        self._path = Path(path)
        self._interval = interval
        self._env = env
        self._on_reload = on_reload
        self._on_error = on_error
        self._allow_empty = allow_empty
        self._seen = _signature(self._path)
        self._stop = threading.Event()
        self._check_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.reloads = 0
        """Successful reloads so far."""
        self.errors = 0
        """Failed attempts so far."""
        self.last_error: Exception | None = None
        """The latest failure, if any."""

    @property
    def path(self) -> Path:
        return self._path

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ConfigWatcher:
        """Starts the polling thread (once); returns ``self``."""
        if self._thread is None:
            # Daemon, so that a forgotten watcher never keeps the process from exiting; stop()
            # (or the manager's close()) ends and joins it.
            self._thread = threading.Thread(
                target=self._run, name=f"admission-watch:{self._path.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stops the thread and waits (up to ``timeout`` seconds) until it has ended."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(blocking_timeout(timeout))

    def _run(self) -> None:
        pending: _Signature = None
        while not self._stop.wait(blocking_timeout(self._interval)):
            if self._in_force() is None:
                return  # nothing left to reload (the manager is gone)
            current = _signature(self._path)
            if current is None or current == self._seen:
                pending = None
                continue
            if current != pending:
                # Changed since the last look, so it may still be being written (an editor
                # or `write_text` truncates, then writes): reload only once the file has held
                # still for a whole interval, never from a half-written file.
                pending = current
                continue
            pending = None
            try:
                self._check(held=current)
            except Exception:
                # A failing on_reload/on_error callback must not end the watching.
                logger.exception("admission: a config watcher callback failed")

    def check(self) -> bool:
        """Reloads now if the file changed since the last look; True if it reloaded."""
        return self._check(held=None)

    def _check(self, held: _Signature) -> bool:
        """`check`; from the polling thread, ``held`` is the signature that held still for an
        interval: if the file no longer has it, it is being written again, and waits."""
        with self._check_lock:
            seen = _signature(self._path)
            if seen is None or seen == self._seen or (held is not None and seen != held):
                return False
            self._seen = seen
            current = self._in_force()
            if current is None:
                return False
            try:
                config = Config.from_file(self._path, env=self._env)
                if not self._allow_empty and not config.limits and current.limits:
                    raise ConfigError(
                        "defines no limits, which would remove all "
                        f"{len(current.limits)} in force (an empty or truncated file?): "
                        "refused; pass allow_empty=True to allow it",
                        source=str(self._path),
                    )
                self._reload(config)
            except ExceptionGroup as group:
                # In force; some of the resources that follow it failed (their errors).
                self._failed(group, f"reloaded the limits from {self._path}, but")
            except Exception as exc:
                self._failed(exc, "kept the limits in force")
                return False
            self.reloads += 1
            logger.info("admission: reloaded the limits from %s", self._path)
            if self._on_reload is not None:
                self._on_reload(config)
            return True

    def _failed(self, exc: Exception, what: str) -> None:
        self.errors += 1
        self.last_error = exc
        logger.warning("admission: %s: %s", what, exc)
        if self._on_error is not None:
            self._on_error(exc)

    def __enter__(self) -> ConfigWatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ConfigWatcher {str(self._path)!r} every {self._interval} s, {state}>"
