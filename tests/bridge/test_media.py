"""Outgoing media on real files: confined to the media folders without following links, WhatsApp's size
limits per type, and a private copy of exactly the bytes that were checked."""
from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from bridge import media
from bridge.media import MediaTooLarge, WHATSAPP_LIMITS_MB
from bridge.sending import BadRequest


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "media", tmp_path / "secret"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    (inside / "photo.jpg").write_bytes(b"jpg")
    (inside / "sub" / "plan.pdf").write_bytes(b"%PDF")
    (outside / "passwd").write_text("root:x:0:0")
    os.symlink(outside / "passwd", inside / "link.pdf")
    os.symlink(outside, inside / "linkdir")
    os.mkfifo(inside / "pipe.ogg")
    return inside, outside


def opened(value: str, dirs: list[Path]) -> Path:
    fd, named = media.open_confined(value, dirs)
    os.close(fd)
    return named


def test_media_is_confined_and_no_link_is_followed(folders: tuple[Path, Path]) -> None:
    inside, outside = folders
    assert opened(str(inside / "photo.jpg"), [inside]) == inside / "photo.jpg"
    assert opened("sub/plan.pdf", [inside]) == inside / "sub" / "plan.pdf"
    assert opened(str(inside.resolve() / "photo.jpg"), [inside]) == inside / "photo.jpg"
    problems = [  # (media_path, status, words): 403 not a file this account may send, 404 no such file
        (str(outside / "passwd"), 403, "outside the allowed media folders"),
        ("../secret/passwd", 403, "outside the allowed media folders"),
        ("sub/../../secret/passwd", 403, "outside the allowed media folders"),
        (str(inside), 403, "outside the allowed media folders"),  # the folder itself is no file
        ("link.pdf", 403, "symbolic link"), ("linkdir/passwd", 403, "symbolic link"),
        ("missing.png", 404, "media file not found"), ("pipe.ogg", 404, "not a regular file"),
        ("sub", 404, "not a regular file"), ("x" * 5000 + ".jpg", 404, "longer than 255"),
        ("a\x00b.jpg", 400, "NUL character"), ("bad\udfff.jpg", 400, "lone surrogate"), ("", 400, "non-empty string"),
    ]
    for value, status, problem in problems:
        with pytest.raises(BadRequest, match=problem) as caught:
            opened(value, [inside])
        assert caught.value.status == status, value
    with pytest.raises(BadRequest, match="not configured") as caught:
        opened("photo.jpg", [])
    assert caught.value.status == 403
    with pytest.raises(BadRequest, match="not found: 'photo.jpg' \\(the media folder .* does not exist") as caught:
        opened("photo.jpg", [inside / "gone"])
    assert caught.value.status == 404


def test_size_limits_per_type_are_whatsapps_and_configurable(tmp_path: Path) -> None:
    assert WHATSAPP_LIMITS_MB == {"image": 5.0, "video": 16.0, "audio": 16.0, "document": 100.0}
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)  # 2 GB, sparse: refused from its size alone
    with open(big, "rb") as f:
        with pytest.raises(MediaTooLarge, match="is 2048.0 MB; the limit for video is 16 MB") as caught:
            media.check_size(f.fileno(), "big.mp4", "video", dict(WHATSAPP_LIMITS_MB))
        assert caught.value.status == 413
        assert media.check_size(f.fileno(), "big.mp4", "video", {"video": 4096}) == 2 * 1024**3
        with pytest.raises(MediaTooLarge, match="limit for video is 0.5 MB"):
            media.check_size(f.fileno(), "big.mp4", "video", {"video": 0.5})


def test_the_copy_holds_what_was_checked_even_if_the_path_is_swapped(folders: tuple[Path, Path], tmp_path: Path) -> None:
    inside, outside = folders
    staging = tmp_path / "account" / "outbox-media"
    fd, named = media.open_confined("photo.jpg", [inside])
    (inside / "photo.jpg").unlink()
    os.symlink(outside / "passwd", inside / "photo.jpg")  # swapped after the check
    staged = media.stage(fd, named, 1024, staging)
    assert staged.media.path.read_bytes() == b"jpg" and staged.media.filename == "photo.jpg" and staged.size == 3
    assert staged.media.media_type == "image"
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700 and stat.S_IMODE(staged.media.path.stat().st_mode) == 0o600
    media.discard(staged.media.path)
    assert list(staging.iterdir()) == []


def test_prepare_reads_off_the_loop_and_refuses_a_file_grown_past_the_limit(folders: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    inside, _ = folders
    staged = asyncio.run(media.prepare("sub/plan.pdf", [inside], {}, tmp_path / "staging"))
    assert staged.media.path.read_bytes() == b"%PDF" and staged.media.media_type == "document"
    fd, named = media.open_confined("photo.jpg", [inside])
    with pytest.raises(MediaTooLarge, match="grew beyond"):
        media.stage(fd, named, 2, tmp_path / "staging")
    assert len(list((tmp_path / "staging").iterdir())) == 1  # only the good copy; the refused one is gone
