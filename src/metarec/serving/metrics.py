"""The service's Prometheus metrics, on a registry of their own."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServiceMetrics:
    """Prometheus metrics on a registry of their own (tests build many services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        fast = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
        slow = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
        self.requests = Counter(
            "metarec_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "metarec_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=fast,
            registry=r,
        )
        self.recommend_seconds = Histogram(
            "metarec_recommend_seconds", "time to rank one request", buckets=fast, registry=r
        )
        self.recommend_batch = Histogram(
            "metarec_recommend_batch_size",
            "requests ranked in one call (micro-batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.fallbacks = Counter(
            "metarec_recommend_fallbacks", "recommendations that fell back", ["kind"], registry=r
        )
        self.events = Counter(
            "metarec_events", "events received, by outcome", ["outcome"], registry=r
        )
        self.event_groups = Histogram(
            "metarec_events_group_size",
            "event batches committed in one transaction (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.adaptations = Counter(
            "metarec_adaptations", "adaptation jobs, by outcome", ["outcome"], registry=r
        )
        self.adaptation_seconds = Histogram(
            "metarec_adaptation_seconds",
            "wall time of an adaptation job",
            buckets=slow,
            registry=r,
        )
        self.swaps = Counter(
            "metarec_model_swaps", "model swaps, by outcome", ["outcome"], registry=r
        )
        self.refresh_seconds = Histogram(
            "metarec_refresh_seconds", "time to rebuild the data snapshot", buckets=slow, registry=r
        )
        self.busy = Counter(
            "metarec_busy_rejections", "requests answered 503", ["reason"], registry=r
        )
        self.queue_depth = Gauge("metarec_queue_depth", "background jobs waiting", registry=r)
        self.gc_frozen = Gauge(
            "metarec_gc_frozen_objects",
            "objects exempt from the garbage collector's full passes (frozen at start-up)",
            registry=r,
        )
        self.gc_frozen.set_function(gc.get_freeze_count)
        self.data_version = Gauge(
            "metarec_data_version", "snapshot of the store served", registry=r
        )
