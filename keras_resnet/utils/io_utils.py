"""One atomic writer: every file the package writes goes through a temporary name and a rename.

A reader (or a resumed run) sees either the previous complete file or the new complete one, never a
half-written file, whatever kills the process. The temporary name is unique to the process and the
thread, so concurrent writers (a search's chief and its workers) never share one. A failure while
writing (a full disk) removes the temporary file, leaves the previous file in place, and raises an
`OSError` whose message names the path.

`folder_lock` makes one process the only writer of a folder (a run folder, a search folder): an
exclusive lock on ``<folder>/.lock`` that the operating system releases when the process ends, however
it ends, so a killed run never leaves a lock behind that blocks its resume.
"""

import contextlib
import errno
import fcntl
import json
import os
import sys
import threading


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path next to `path`; on success renames it over `path`, else removes it.

    `suffix` keeps the extension that a writer needs (``".keras"`` for Keras, ``".png"`` for
    matplotlib).
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    base, ext = os.path.splitext(os.path.basename(path))
    tmp = os.path.join(folder, f".{base}.partial-{os.getpid()}-{threading.get_ident()}{suffix or ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise OSError(e.errno, f"no space left on the device while writing {path!r}: free some "
                                   "space and run the same command again") from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


LOCK_FILE = ".lock"
_HELD = {}  # real path of a folder this process holds -> [descriptor of its lock file, depth]


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock: it is writing there now."""


@contextlib.contextmanager
def folder_lock(folder, what="folder", hint=""):
    """Inside the block this process is the only writer of `folder` (created if missing).

    The lock is ``fcntl.flock`` on ``<folder>/.lock``, which holds the holder's process id; the
    operating system releases it when the process ends, even by ``kill -9``. The same process may
    enter the block again (nested) for the same folder.

    Args:
        folder: the folder.
        what: what the folder is, for the message ("run folder", "search folder").
        hint: what to do instead, appended to the message.

    Raises:
        FolderInUseError: another process holds the lock; the message names the folder and its pid.
    """
    folder = os.path.abspath(os.fspath(folder))
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        holder = lock_holder(folder)
        raise FolderInUseError(
            f"the {what} {folder} is in use by another process ({f'pid {holder}' if holder else 'pid unknown'}"
            f"); two writers would mix their files{'; ' + hint if hint else ''}") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[key] = [fd, 1]
        yield folder
    finally:
        _HELD.pop(key, None)
        os.close(fd)  # releases the lock


def lock_holder(folder):
    """The process id written in `folder`'s lock file (whoever holds or last held it), or None."""
    try:
        with open(os.path.join(os.fspath(folder), LOCK_FILE)) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return os.fspath(path)


def write_text(path, text):
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, indent=1):
    return write_text(path, json.dumps(obj, indent=indent))


def jsonable(mapping):
    """`mapping` with its tuple values as lists, as JSON (and a Keras config) holds them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in mapping.items()}


def read_json(path):
    """The JSON object in `path`, or None if it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


MODEL_FACTS = "keras_resnet.json"  # the entry of a .keras archive that holds what the model was trained on


def save_model(model, path, facts=None):
    """Saves a Keras model (``.keras``) atomically; `facts` (a JSON-able dict: the data the model was
    trained on, its normalisation, ...) go into the archive as `MODEL_FACTS`, which Keras's loader
    leaves alone and `model_facts` reads, so the file carries them wherever it is copied."""
    import zipfile

    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        if facts is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(MODEL_FACTS, json.dumps(facts, indent=1))
    return os.fspath(path)


def model_facts(path):
    """The `facts` that `save_model` put into a ``.keras`` file, or None (a file without them, or not
    a readable archive)."""
    import zipfile

    try:
        with zipfile.ZipFile(os.fspath(path)) as archive:
            facts = json.loads(archive.read(MODEL_FACTS))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return facts if isinstance(facts, dict) else None


def save_weights(model, path):
    """Saves a Keras model's weights (``.weights.h5``) atomically."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    return os.fspath(path)


def sha256_of(path, chunk=1 << 20):
    """The SHA-256 fingerprint of a file (hex), read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def new_figure(**kwargs):
    """A `matplotlib.figure.Figure` with its own canvas: the global plotting backend is never touched."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, path, dpi=100):
    """Writes a figure (PNG) atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    return os.fspath(path)


def load_model(path, argument="model"):
    """Loads a ``.keras`` file, or raises a one-line error that names the path and what is wrong."""
    import zipfile

    import keras

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"`{argument}`: no file at {path!r}; pass the path of a .keras file")
    if os.path.isdir(path) or not path.endswith(".keras"):
        raise ValueError(f"`{argument}` must be the path of a .keras file. Received: {argument}={path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a readable .keras file (truncated or corrupt?): it is not a zip "
                         "archive. Train or export it again.")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 -- Keras raises many kinds for a damaged archive
        raise ValueError(f"{path!r} is not a readable .keras file (truncated or corrupt?): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


@contextlib.contextmanager
def quiet_native_logs(enabled=True):
    """Inside the block, what native code (TensorFlow's and MLIR's C++ logging) writes to file
    descriptor 2 goes to /dev/null, while Python's `sys.stderr` (warnings, error messages) still
    reaches the original standard error."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    python_stderr = sys.stderr
    if _fileno(python_stderr) == 2:  # Python's stderr writes to fd 2: keep it on the original stream
        sys.stderr = _stream_to(saved)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        _flush_c_streams()  # native code may hold log lines in C stdio buffers
        sys.stderr.flush()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_STREAMS = {}  # (device, inode) of a standard error -> one text stream to it, reused by every call


def _stream_to(fd):
    """A text stream to what `fd` refers to, made once per target and left open: a logging handler
    created inside a quiet block keeps writing to it after the block."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    if key not in _STREAMS:
        _STREAMS[key] = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")
    return _STREAMS[key]


def _fileno(stream):
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _flush_c_streams():
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
