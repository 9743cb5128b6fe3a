"""Outgoing media: WhatsApp's size limits, a confined open that follows no link, and the private copy we send.

Why a copy: `media_path` is checked when the request arrives, but the send may
happen much later (after a reconnect, after a restart). Opening the path again
then would send whatever it names by then — a symlink to /etc/passwd swapped in
meanwhile. So the request opens the file once (every component with
O_NOFOLLOW, relative to a media folder's descriptor), checks size and type on
that descriptor, and copies exactly those bytes, off the event loop, into the
account's private `outbox-media/` folder; the outbox sends that copy and
removes it once the row is done.
"""
from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from bridge.sending import BadRequest, media_type_for
from bridge.transport import OutgoingMedia

MB = 1024 * 1024
# WhatsApp's own limits (Business Platform Cloud API "Supported media types"): a larger file is refused by
# WhatsApp after we have read, encrypted and uploaded it. Configurable per account (media_max_mb).
WHATSAPP_LIMITS_MB = {"image": 5.0, "video": 16.0, "audio": 16.0, "document": 100.0}
MAX_NAME = 255  # bytes, a file-name component on Linux
_CHUNK = MB


class MediaTooLarge(BadRequest):
    """The file exceeds the limit for its media type (answered 413)."""

    status = 413


class MediaForbidden(BadRequest):
    """Not a file this account may send: outside the media folders, through a link, unreadable (403)."""

    status = 403


class MediaNotFound(BadRequest):
    """No such file in the media folders (404): a well-formed request naming what is not there."""

    status = 404


@dataclass(frozen=True)
class StagedMedia:
    media: OutgoingMedia  # .path is our private copy
    sha256: str  # of the bytes sent: part of the request fingerprint
    size: int


def limit_bytes(limits_mb: dict[str, float], media_type: str) -> int:
    return int(limits_mb.get(media_type, WHATSAPP_LIMITS_MB[media_type]) * MB)


def _relative_to_a_folder(value: str, media_dirs: list[Path]) -> tuple[Path, Path]:
    """(media folder, path inside it), lexically: '..' may not climb out, and no link is resolved here."""
    raw = Path(value)
    candidate = Path(os.path.normpath(raw if raw.is_absolute() else media_dirs[0] / raw))
    for root in media_dirs:
        for form in (Path(os.path.normpath(root)), root.resolve()):
            if candidate.is_relative_to(form) and candidate != form:
                return root, candidate.relative_to(form)
    allowed = ", ".join(str(d) for d in media_dirs)
    raise MediaForbidden(f"media_path {value!r} is outside the allowed media folders ({allowed})")


def open_confined(value: object, media_dirs: list[Path]) -> tuple[int, Path]:
    """Open `media_path` read-only inside a media folder without following any link; (fd, path as named).

    BadRequest names the problem: outside the folders, a symbolic link, missing, not a regular file, a bad name.
    """
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("media_path must be a non-empty string")
    if not media_dirs:
        raise MediaForbidden("media sending is not configured (no media_dirs)")
    if "\x00" in value:
        raise BadRequest("media_path contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("media_path contains a lone surrogate (not valid Unicode text)") from None
    value = value.strip()
    root, inside = _relative_to_a_folder(value, media_dirs)
    if any(len(part.encode()) > MAX_NAME for part in inside.parts):  # no such file can exist
        raise MediaNotFound(f"media file not found: media_path has a name longer than {MAX_NAME} bytes")
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MediaNotFound(f"media file not found: {value!r} (the media folder {root} does not exist)") from None
    except OSError as exc:
        raise BadRequest(f"media folder {root} cannot be opened: {exc.strerror}") from None
    try:
        for part in inside.parts[:-1]:
            next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(inside.parts[-1], flags | os.O_NONBLOCK, dir_fd=dir_fd)  # O_NONBLOCK: a FIFO must not hang us
    except OSError as exc:
        raise _open_problem(value, exc) from None
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise MediaNotFound(f"media_path {value!r} is not a regular file")
    return fd, root / inside


def _open_problem(value: str, exc: OSError) -> BadRequest:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return MediaForbidden(f"media_path {value!r} is or passes through a symbolic link (links are not followed: "
                              "they may point outside the allowed media folders)")
    if exc.errno in (errno.ENOENT, errno.ENAMETOOLONG):
        return MediaNotFound(f"media file not found: {value!r}")
    cls = MediaForbidden if exc.errno == errno.EACCES else BadRequest
    return cls(f"media_path {value!r} cannot be opened: {exc.strerror}")


def check_size(fd: int, value: str, media_type: str, limits_mb: dict[str, float]) -> int:
    """The file's size, or MediaTooLarge naming the limit (checked when the request arrives)."""
    size = os.fstat(fd).st_size
    limit = limit_bytes(limits_mb, media_type)
    if size > limit:
        raise MediaTooLarge(f"media file {value!r} is {size / MB:.1f} MB; the limit for {media_type} is "
                            f"{limit / MB:g} MB (WhatsApp's own; media_max_mb.{media_type} in the account config)")
    if size == 0:
        raise BadRequest(f"media file {value!r} is empty")
    return size


def stage(fd: int, named: Path, limit: int, staging_dir: Path) -> StagedMedia:
    """Copy the open file (at most `limit` bytes) into a fresh private folder; closes `fd`. Blocking: run in a thread."""
    media_type = media_type_for(named)
    staging_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = staging_dir / secrets.token_hex(8)
    folder.mkdir(mode=0o700)
    target = folder / named.name
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "rb") as source, open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                                                 "wb") as copy:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:  # it grew after the check
                    raise MediaTooLarge(f"media file {str(named)!r} grew beyond the {media_type} limit "
                                        f"of {limit / MB:g} MB while it was read")
                digest.update(chunk)
                copy.write(chunk)
    except BaseException:
        discard(target)
        raise
    return StagedMedia(OutgoingMedia(target, media_type, named.name), digest.hexdigest(), size)


def discard(path: Path) -> None:
    """Remove a staged copy and its folder (nothing if already gone)."""
    try:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
    except OSError:
        pass


async def prepare(value: object, media_dirs: list[Path], limits_mb: dict[str, float],
                  staging_dir: Path) -> StagedMedia:
    """Everything a send with media needs at request time: open, check, copy (the copy off the loop)."""
    fd, named = open_confined(value, media_dirs)
    try:
        media_type = media_type_for(named)
        check_size(fd, str(value).strip(), media_type, limits_mb)
    except BaseException:
        os.close(fd)
        raise
    return await asyncio.to_thread(stage, fd, named, limit_bytes(limits_mb, media_type), staging_dir)
