"""Alerts: incidents from the state machine, routed to channels through Apprise, via an outbox."""
