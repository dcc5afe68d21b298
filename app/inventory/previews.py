"""CSV files kept between an import's preview and its confirmation, so that what is imported is
exactly what was previewed.

They wait on disk (a private folder: every server process of the host sees them), one folder
per preview under one per user, bounded: a preview lasts `ttl_s`, a user keeps the latest
`per_user`, the host the latest `total`; older ones are deleted whenever a preview is kept or
used, and a preview is deleted once imported. A user can only use their own previews.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(tempfile.gettempdir()) / "termpulse-uploads"


@dataclass
class PreviewStore:
    root: Path = DEFAULT_ROOT
    ttl_s: float = 30 * 60
    per_user: int = 3
    total: int = 50

    def expired_message(self) -> str:
        return (
            f"This preview has expired (a preview is kept {self.ttl_s / 60:g} min, and only your "
            f"latest {self.per_user}), or it was already imported: choose the files again."
        )

    def keep(self, owner: str, files: list[tuple[str, bytes]]) -> str:
        """Keep the files of a new preview; its token."""
        token = secrets.token_urlsafe(16)
        folder = self._owner_folder(owner) / token
        folder.mkdir(mode=0o700, parents=True)
        for index, (name, data) in enumerate(files):
            (folder / f"{index}-{Path(name).name}").write_bytes(data)
        self.prune()
        return token

    def load(self, owner: str, token: str) -> list[tuple[str, bytes]] | None:
        """The files of `owner`'s preview `token`, None if there is none (expired, pruned, used)."""
        self.prune()
        if (folder := self._folder(owner, token)) is None:
            return None
        try:
            return [(p.name.split("-", 1)[1], p.read_bytes()) for p in sorted(folder.iterdir())]
        except FileNotFoundError:  # none, or pruned by another process meanwhile
            return None

    def discard(self, owner: str, token: str) -> None:
        if (folder := self._folder(owner, token)) is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def previews(self) -> list[Path]:
        """Every preview folder kept, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for user in self.root.iterdir() if user.is_dir() for p in user.iterdir() if p.is_dir()]
        return sorted(found, key=_mtime)

    def prune(self) -> None:
        """Delete what is past its age, past the user's count and past the host's count."""
        now = time.time()
        kept: list[Path] = []
        for folder in self.previews():
            if now - _mtime(folder) > self.ttl_s:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                kept.append(folder)
        per_user: dict[Path, list[Path]] = {}
        for folder in kept:
            per_user.setdefault(folder.parent, []).append(folder)
        over = [f for folders in per_user.values() for f in folders[: max(len(folders) - self.per_user, 0)]]
        left = [f for f in kept if f not in over]
        over += left[: max(len(left) - self.total, 0)]
        for folder in over:
            shutil.rmtree(folder, ignore_errors=True)

    def _owner_folder(self, owner: str) -> Path:
        self.root.mkdir(mode=0o700, exist_ok=True)
        return self.root / hashlib.sha256(owner.encode()).hexdigest()[:16]

    def _folder(self, owner: str, token: str) -> Path | None:
        if not token or not token.replace("-", "").replace("_", "").isalnum() or not token.isascii():
            return None
        return self._owner_folder(owner) / token


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by another process meanwhile
        return 0.0
