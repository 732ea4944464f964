"""The process logs of an end-to-end stack, for a failure message."""

from __future__ import annotations

from pathlib import Path


def process_tails(log_dir: Path, lines: int = 60) -> str:
    """The last `lines` lines of every process log in `log_dir`, each under its file name."""
    parts = []
    for log in sorted(log_dir.glob("*.log")):
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(parts)
