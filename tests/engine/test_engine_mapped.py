"""Releasing the resident pages of memory-mapped weight files (satellite.engine.mapped)."""

from __future__ import annotations

import mmap
from pathlib import Path

from satellite.engine.mapped import release_mapped_pages

PAGE = mmap.PAGESIZE


def _resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    target = str(path.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            inside = len(fields) >= 6 and fields[5] == target
        elif inside and fields and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_pages_are_given_back_and_nothing_is_lost(tmp_path: Path) -> None:
    data = tmp_path / "weights.onnx_data"
    pages = 2048  # 8 MB
    data.write_bytes(bytes(range(256)) * (pages * PAGE // 256))
    with data.open("rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private + writable, like ORT
    try:
        checksum = sum(view[i * PAGE] for i in range(pages))  # touch every page
        view[0:4] = b"\x01\x02\x03\x04"  # a page this process changed (copy-on-write)
        before = _resident_kb(data)
        assert before >= pages * PAGE // 1024 // 2, before
        released = release_mapped_pages(data)
        after = _resident_kb(data)
        assert released >= pages * PAGE
        assert after <= before * 0.1, f"{before} kB resident before, {after} kB after"
        assert view[0:4] == b"\x01\x02\x03\x04", "a changed page must survive (no swap: kept)"
        assert sum(view[i * PAGE] for i in range(1, pages)) == checksum - 0, "re-read intact"
    finally:
        view.close()


def test_no_mapping_no_effect(tmp_path: Path) -> None:
    path = tmp_path / "none.onnx_data"
    path.write_bytes(b"x" * PAGE)
    assert release_mapped_pages(path) == 0
