"""Drift: what changed on the host behind git's back. ``detect`` is pure; ``watch`` follows Docker."""
