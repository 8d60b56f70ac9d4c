"""Desired vs live: ruleset and settings drift, foreign interference, conntrack health."""
