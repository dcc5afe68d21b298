"""Maintenance windows and trading hours: when a store is quiet (no alerts; maintenance in history)."""
