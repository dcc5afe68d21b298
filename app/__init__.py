"""TermPulse: connectivity dashboard for payment-terminal fleets."""

__version__ = "0.1.0"
