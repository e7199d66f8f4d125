"""Photos and documents attached to a case step: what is accepted, checked before anything is
stored. A file is recognised by its first bytes, not by its name or the browser's word; images
must decode (a truncated upload or a decompression bomb is refused); names are cleaned."""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from pathlib import PurePath

from grids.flow import CaseError

MAX_BYTES = 10 * 1024 * 1024  # one file
MAX_FILES = 6  # one step
MAX_PIXELS = 50_000_000  # a phone photo is ~12–50 Mpx; more is a bomb, not a photo
SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
IMAGES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


def sniff(data: bytes) -> str | None:
    for magic, mime in SIGNATURES:
        if data.startswith(magic):
            return mime
    if len(data) > 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def clean_name(name: str) -> str:
    """The file's own name (no folders), without control characters, at most 120 chars."""
    base = PurePath(str(name).replace("\\", "/")).name or "附件"
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return (base or "附件")[:120]


def check(uploads: list[Upload]) -> list[tuple[str, str, bytes]]:
    """(name, mime, data) of every upload, or CaseError naming the first bad file."""
    if len(uploads) > MAX_FILES:
        raise CaseError(f"每次最多上传 {MAX_FILES} 个附件（收到 {len(uploads)} 个）")
    out = []
    for up in uploads:
        name = clean_name(up.name)
        if not up.data:
            raise CaseError(f"附件“{name}”是空文件")
        if len(up.data) > MAX_BYTES:
            raise CaseError(f"附件“{name}”超过 {MAX_BYTES // 1024 // 1024} MB"
                            f"（{len(up.data) / 1024 / 1024:.1f} MB），请压缩后上传")
        mime = sniff(up.data)
        if mime is None:
            raise CaseError(f"附件“{name}”不是可接受的格式：只接受 JPEG、PNG、WebP、GIF 照片或 PDF")
        if mime in IMAGES:
            _check_image(name, up.data)
        out.append((name, mime, up.data))
    return out


def _check_image(name: str, data: bytes) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise CaseError(f"附件“{name}”像素过大（{w}×{h}），请缩小后上传")
            img.verify()
    except CaseError:
        raise
    except Exception as exc:  # PIL raises many kinds for a broken file
        why = type(exc).__name__
        raise CaseError(f"附件“{name}”不是完整的图片文件，无法打开（{why}）") from exc


def thumbnail(data: bytes, size: int = 240) -> bytes | None:
    """A small JPEG of an image (None for documents or anything that does not decode)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img)
            img.thumbnail((size, size))
            out = io.BytesIO()
            img.convert("RGB").save(out, "JPEG", quality=80)
            return out.getvalue()
    except Exception:  # a document, or a file that verifies but does not render
        return None
