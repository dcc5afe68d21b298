"""Provider accounts: where cloud liveness comes from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

PROVIDER_KINDS = ("adyen", "stripe")
ENVIRONMENTS = ("test", "live")


class ProviderAccount(Base):
    __tablename__ = "provider_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    environment: Mapped[str] = mapped_column(String(8), default="test")
    region: Mapped[str] = mapped_column(String(16), default="")
    merchant_account: Mapped[str] = mapped_column(String(100), default="")
    api_base_url: Mapped[str | None] = mapped_column(String(300))
    management_base_url: Mapped[str | None] = mapped_column(String(300))
    use_legacy_api: Mapped[bool] = mapped_column(Boolean, default=False)
    api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)  # Fernet token, never clear text
    api_key_hint: Mapped[str] = mapped_column(
        String(16), default=""
    )  # last 4 characters, for the masked view
    requests_per_second: Mapped[float] = mapped_column(Float, default=5.0)
    poll_interval_s: Mapped[int] = mapped_column(Integer, default=60)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
