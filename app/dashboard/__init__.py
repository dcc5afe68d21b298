"""The dashboard: stores overview, terminals list, terminal detail, live updates."""
