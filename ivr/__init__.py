"""Offline voice assistant that replaces the push-button IVR on Asterisk."""

__version__ = "0.1.0"
