"""Settings from TERMPULSE_* environment variables (documented in the README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent  # the folder holding `app`: the source tree, or site-packages


def bundled_dir(name: str) -> Path:
    """The top-level folder `name` (migrations, templates, static), found through the package.

    An installed wheel carries it inside the package as `app/_<name>` (see setup.py); a source
    tree or an editable install keeps it beside the package. Never found from the working directory.
    """
    shipped = PACKAGE_DIR / f"_{name}"
    return shipped if shipped.is_dir() else PROJECT_ROOT / name


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TERMPULSE_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./termpulse.db"
    host: str = "127.0.0.1"
    port: int = 8000
    secret_key: str = "change-me-in-production"
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")

    # Checking engine
    allowed_networks: Annotated[list[str], NoDecode] = ["0.0.0.0/0", "::/0"]
    dns_nameservers: Annotated[list[str], NoDecode] = []
    dns_port: int = 53
    trusted_ca_file: Path | None = None  # extra CA bundle for TLS/HTTPS checks (e.g. a corporate CA)
    check_interval_s: int = 60
    check_timeout_s: float = 5.0
    worker_concurrency: int = 500
    claim_batch: int = 500
    lease_s: int = 30
    result_retention_days: int = 30

    templates_dir: Path = bundled_dir("templates")
    static_dir: Path = bundled_dir("static")

    _split = field_validator("allowed_networks", "dns_nameservers", mode="before")(_split_list)


@lru_cache
def get_settings() -> Settings:
    return Settings()
