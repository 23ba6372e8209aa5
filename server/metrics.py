"""Prometheus metrics of one app, in its own registry (so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The gateway's metrics; `render()` gives the text exposition for `/metrics`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.open_sessions = Gauge(
            "stepaudio2_open_sessions", "Open realtime sessions", registry=self.registry
        )
        self.responses = Counter(
            "stepaudio2_responses", "Finished responses by status", ["status"],
            registry=self.registry,
        )
        self.time_to_first_audio = Histogram(
            "stepaudio2_time_to_first_audio_seconds",
            "From response start to its first audio delta",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.barge_ins = Counter(
            "stepaudio2_barge_ins", "Responses interrupted by user speech", registry=self.registry
        )
        self.errors = Counter(
            "stepaudio2_errors", "Error events sent, by code", ["code"], registry=self.registry
        )
        self.engine_in_flight = Gauge(
            "stepaudio2_engine_in_flight", "Engine requests in flight", registry=self.registry
        )
        self.token2wav_queue_depth = Gauge(
            "stepaudio2_token2wav_queue_depth", "Chunks waiting for the token2wav worker",
            registry=self.registry,
        )

        self.engine_server_up = Gauge(
            "stepaudio2_engine_server_up", "Remote vLLM server healthy (1) or taken out (0)",
            ["url"], registry=self.registry,
        )
        self.engine_server_in_flight = Gauge(
            "stepaudio2_engine_server_in_flight", "Requests in flight per remote vLLM server",
            ["url"], registry=self.registry,
        )

    def observe_engine_servers(self, servers: Iterable[Any]) -> None:
        """Per-server health and load of a remote engine (objects with url, healthy, in_flight),
        read at scrape time."""
        for server in servers:
            self.engine_server_up.labels(server.url).set(1.0 if server.healthy else 0.0)
            self.engine_server_in_flight.labels(server.url).set(float(server.in_flight))

    def track_token2wav_queue(self, depth: Callable[[], int]) -> None:
        """Read the token2wav worker's queue depth at scrape time."""
        self.token2wav_queue_depth.set_function(lambda: float(depth()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
