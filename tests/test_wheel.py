"""A normal (not editable) install works outside the repository: `pip install .` / `pipx install .`.

The wheel is built from a copy of the source tree and installed into a fresh virtualenv under
tmp_path; its dependencies come from this project's virtualenv through a .pth file (the wheel
itself is installed with --no-deps), so nothing is downloaded but the build backend. Then, with
the working directory outside the repository, `termpulse migrate` and `termpulse serve` must work.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.html import dom

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "test-artifacts",
    ".*_cache", "*.db", "*.db-*",
)  # fmt: skip


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)  # builds leave build/ and egg-info behind
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", root / "dist", source)
    (wheel,) = (root / "dist").glob("termpulse-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "app/_migrations/env.py",
        "app/_migrations/script.py.mako",
        "app/_templates/base.html",
        "app/_static/app.css",
        "app/inventory/fleet/stores.csv",
    ):
        assert expected in names
    assert any(n.startswith("app/_migrations/versions/") and n.endswith(".py") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    bin_dir = venv / "bin"
    python = bin_dir / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (Path(site) / "termpulse-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return bin_dir


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TERMPULSE_", "PYTHON"))}
    env["TERMPULSE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'installed.db'}"
    env["TERMPULSE_SECRET_KEY"] = "wheel-test-secret-key-0123456789abcdef"
    return env


def test_installed_package_migrates_and_serves(installed, tmp_path):
    env = _env(tmp_path)
    where = _run(installed / "python", "-c", "import app; print(app.__file__)", cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout  # not the repo

    _run(installed / "termpulse", "migrate", cwd=tmp_path, env=env)
    with sqlite3.connect(tmp_path / "installed.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"alembic_version", "stores", "terminals", "monitors"} <= tables

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [installed / "termpulse", "serve", "--no-worker", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve never answered /healthz"
            time.sleep(0.2)

        page = httpx.get(f"{base}/", follow_redirects=True, timeout=10)
        assert page.status_code == 200, page.text
        d = dom(page)  # the stylesheets, scripts, icons and images the page links to
        linked = [e.get("href") for e in d.cssselect("link[href]")]
        linked += [e.get("src") for e in d.cssselect("script[src], img[src]")]
        assets = {url.split("?")[0] for url in linked if url.startswith("/static/")}
        assert any(a.startswith("/static/vendor/htmx") for a in assets), assets
        for asset in assets:
            assert httpx.get(f"{base}{asset}", timeout=10).status_code == 200, asset
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
