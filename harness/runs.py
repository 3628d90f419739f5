"""Run ids, run directories and the one way records are written: atomically and durably.

Every file is written under a temporary name in its own folder, flushed and synced to disk, renamed
into place and its folder synced, so a crash leaves either the old file or the whole new one. A run
directory (or a data file) is written the same way as a whole: a directory under its final name was
complete when renamed (a stage is finished only once its manifest is written after it:
`harness.records.manifest`). Long runs write into a fixed ``.<name>.partial`` directory as they go,
which `--resume` continues. Run ids are canonical HELM-style strings,
``eval:task=cbt,model=smollm2-135m,split=test,seed=0``, that double as directory names.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from harness.errors import HarnessError

PACKAGES = ("dits-harness", "torch", "transformers", "trl", "peft", "datasets", "lm_eval", "tokenizers")


def run_id(kind: str, **fields) -> str:
    return kind + ":" + ",".join(f"{k}={v}" for k, v in fields.items() if v is not None)


def dir_name(rid: str) -> str:
    """Run ids keep their canonical form on disk; only path separators are replaced."""
    return rid.replace("/", "_").replace(os.sep, "_")


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if sha.returncode:
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def inside(root: Path, relative: str | os.PathLike) -> Path:
    """`root / relative`, refused in one line where `relative` is absolute or leads out of `root`
    (`..`, a link): a path read from a record, a manifest or a data row names a file under its own
    root, never one elsewhere."""
    rel = Path(relative)
    if rel.is_absolute() or not (Path(root).resolve() / rel).resolve().is_relative_to(Path(root).resolve()):
        raise HarnessError(f"{root}: {str(relative)!r} leads outside it (a record names files under its own root only)")
    return Path(root) / rel


def write_json(path: Path, data) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def write_text(path: Path, text: str) -> None:
    """`text` as `path`, atomically and durably."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _temporary_name(final: Path) -> Path:
    # Beside `final` (a rename within one file system is atomic); created with the default mode,
    # not tempfile's private 0600, so records stay readable as before.
    return final.parent / f".{final.name[:40]}.partial-{os.getpid()}-{secrets.token_hex(4)}"


def _sync(path: Path) -> None:
    """Flush a file's or a folder's contents (a folder's: its names) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_tree(root: Path) -> None:
    """Every file and folder under `root`, also what libraries wrote there (model weights)."""
    for folder, _, files in os.walk(root):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                _sync(Path(folder) / name)
        _sync(Path(folder))


def _rename_durably(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)
    _sync(final.parent)  # the rename itself survives a crash only once its folder is synced


class Unwritable(HarnessError):
    """A file or folder the harness could not write (a read-only folder, a full disk, a file where
    a folder should be)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: cannot write it ({reason})")
        self.path, self.reason = Path(path), reason


@contextmanager
def unwritable(final: Path):
    """An OS error while writing `final` as one line naming it; what was half-written is removed by
    the caller's cleanup."""
    try:
        yield
    except OSError as e:
        raise Unwritable(final, e.strerror or str(e)) from None


@contextmanager
def atomic_file(final: Path):
    """Yield a temporary path beside `final`; on success it is synced and replaces `final` (the
    rename synced too), on failure it is removed."""
    with unwritable(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_name(final)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            yield tmp
            _sync(tmp)
            _rename_durably(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


@contextmanager
def run_directory(final: Path):
    """Yield a temporary directory; on success everything in it is synced and it replaces `final`,
    on failure it is removed (with a folder it created for it)."""
    created = _missing_parents(final)
    try:
        with unwritable(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temporary_name(final)
            tmp.mkdir()
        try:
            try:
                yield tmp
            except Unwritable as e:  # named where it was going, not by the temporary folder, now gone
                if not e.path.is_relative_to(tmp):
                    raise
                raise Unwritable(final / e.path.relative_to(tmp), e.reason) from None
            with unwritable(final):
                _sync_tree(tmp)
                if final.exists():
                    shutil.rmtree(final)
                _rename_durably(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        for folder in created:  # deepest first; only if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _missing_parents(final: Path) -> list[Path]:
    """The folders above `final` that do not exist yet, deepest first."""
    return [p for p in final.absolute().parents if not p.exists()]


@contextmanager
def resumable_directory(final: Path, resume: bool):
    """Yield the partial directory of a long run; on success it is synced and replaces `final`. On
    failure it stays, so `resume=True` continues from what it holds; without it, a stale one is cleared."""
    partial = final.parent / f".{final.name}.partial"
    with unwritable(final):
        if partial.exists() and not resume:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
    yield partial
    with unwritable(final):
        _sync_tree(partial)
        if final.exists():
            shutil.rmtree(final)
        _rename_durably(partial, final)


def append_jsonl(path: Path, rows) -> None:
    """Append whole lines and flush them to disk: what a killed run leaves is complete up to a line."""
    with unwritable(path), open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_complete_jsonl(path: Path) -> list[dict]:
    """The complete lines of a file another run was appending to (a cut last line is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def read_json(path: Path):
    """A JSON file's value; unreadable or invalid is one `file: reason` error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise HarnessError(f"{path}: cannot read it ({e.strerror})") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Rows with their 1-based line numbers; a bad line is one `file:line: reason` error."""
    out = []
    try:
        f = open(path, "rb")  # decoded line by line, so a byte that is not UTF-8 is named by its line
    except OSError as e:
        raise HarnessError(f"{path}: cannot read it ({e.strerror})") from None
    with f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise HarnessError(f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") \
                    from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise HarnessError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise HarnessError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            out.append((i, row))
    return out
