"""Clients of the realtime server: browser demo, Python client, load generator."""
