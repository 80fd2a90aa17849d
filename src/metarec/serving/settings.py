"""Typed settings of the HTTP service (`metarec serve`): what to serve and its safety limits.

Run options, not training config: nothing here changes a model's scores. Every limit has a
documented HTTP answer (docs/SERVING.md): a body over ``max_body_bytes`` gets 413, more than
``max_in_flight`` requests at once or a full adaptation queue gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from metarec.ranking.retrieval import DEFAULT_RANK, DEFAULT_SHORT_LIST, RetrievalSettings
from metarec.serving.rankers import MAX_ADAPT_POSITIVES

MIN_TOKEN_LENGTH = 8  # characters of the bearer token at least


class ServeSettings(BaseModel):
    """Settings of one service process.

    Attributes:
        model_dir: the model folder served at start (adapted categories are written there).
        store_path: the DuckDB store the process owns read-write.
        token: bearer token of the write and admin endpoints (never logged or echoed).
        host, port: where `metarec serve` listens (loopback by default).
        max_body_bytes: largest request body accepted (413 beyond).
        max_in_flight: requests handled at once; more get 503 + Retry-After (health and metrics
            are exempt, so probes still answer under overload).
        compute_threads: recommendations computed at once (each in a worker thread).
        max_k: largest ``k`` a recommendation may ask for (422 beyond).
        max_events: events per POST /events batch (422 beyond).
        short_list: items the exact MLP re-ranks after dot-product retrieval.
        retrieval_rank: width of the projected item matrix (see ranking/retrieval.py).
        queue_size: background jobs (adaptations, model swaps) waiting at most; 503 beyond.
        readapt_every: re-adapt an adapted category automatically after this many new events
            in it (0: only on request).
        refresh_seconds: after writes, how long to wait for more before rebuilding the view of
            the store that recommendations read (events are durable at once either way).
        retry_after_seconds: the Retry-After of 503 answers.
        job_timeout_seconds: how long POST /admin/model waits for its swap before 504; also
            every job's deadline (a job still queued after it fails; one still running after
            it makes /health/ready answer 503 "stuck").
        body_timeout_seconds: a request body must arrive whole within this (408 beyond).
        max_buffered_bytes: request body bytes held by all requests together (503 beyond):
            with ``max_body_bytes`` and ``max_in_flight``, what bounds the memory bodies take.
        max_batch: concurrent personalised recommendations of one category ranked in one call
            at most (micro-batching, :mod:`metarec.serving.batcher`); 1 turns it off.
        batch_wait_seconds: how long a group smaller than the category's last one waits for
            others (a group as large is ranked at once), and how long the requests that waited
            for a call wait after it for the clients it answered (from when their answers are
            written).
        max_adapt_positives: an MLP learner's adaptation trains on at most this many of the
            category's positives, a seeded uniform sample (its memory grows with them: about
            40 kB each for the benchmark's model; a live category's support only grows).
        model_roots: folders a swap may load a model from (the model folder must be inside
            one, symlinks resolved); empty: the served model's parent folder.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path
    store_path: Path
    token: SecretStr = Field(min_length=MIN_TOKEN_LENGTH)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_in_flight: int = Field(default=256, ge=1)
    compute_threads: int = Field(default=2, ge=1)
    max_k: int = Field(default=1000, ge=1)
    max_events: int = Field(default=10_000, ge=1)
    short_list: int = Field(default=DEFAULT_SHORT_LIST, ge=1)
    retrieval_rank: int = Field(default=DEFAULT_RANK, ge=1)
    queue_size: int = Field(default=8, ge=1)
    readapt_every: int = Field(default=0, ge=0)
    refresh_seconds: float = Field(default=0.5, ge=0)
    retry_after_seconds: int = Field(default=1, ge=1)
    job_timeout_seconds: float = Field(default=300.0, gt=0)
    body_timeout_seconds: float = Field(default=10.0, gt=0)
    max_buffered_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_batch: int = Field(default=16, ge=1)
    batch_wait_seconds: float = Field(default=0.001, ge=0, le=0.1)
    max_adapt_positives: int = Field(default=MAX_ADAPT_POSITIVES, ge=1)
    model_roots: tuple[Path, ...] = ()

    def roots(self) -> tuple[Path, ...]:
        """The folders swaps may load from, resolved (``model_roots``, else the model's parent)."""
        roots = self.model_roots or (Path(os.path.abspath(self.model_dir)).parent,)
        return tuple(Path(os.path.realpath(root)) for root in roots)

    def retrieval(self) -> RetrievalSettings:
        """How large categories are ranked (the library's defaults unless changed here)."""
        return RetrievalSettings(short_list=self.short_list, rank=self.retrieval_rank)
