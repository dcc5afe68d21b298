"""Imports every domain's models so the metadata (and Alembic) sees all tables."""

from app.alerts.models import (  # noqa: F401
    AlertChannel,
    AlertCursor,
    AlertRule,
    DeliveryAttempt,
    Incident,
    IncidentEvent,
    IncidentMember,
    IncidentNotice,
    Notification,
)
from app.auth.models import User  # noqa: F401
from app.db import Base  # noqa: F401
from app.history.models import DailyUptime, DailyUptimeFill  # noqa: F401
from app.inventory.models import Agent, Monitor, Store, Terminal, TerminalEvent  # noqa: F401
from app.monitoring.models import (  # noqa: F401
    CheckResult,
    Rollup,
    RollupRedo,
    StateChange,
    UptimeRedo,
    WorkerBeat,
)
from app.providers.models import ProviderAccount  # noqa: F401
from app.web.ratelimit import RateLimitCounter  # noqa: F401
from app.windows.models import MaintenanceWindow, TradingHours  # noqa: F401
