"""Offline batch jobs: JSONL requests in, OpenAI-batch-shaped JSONL results out, resumable after a crash."""

from .io import BatchRequest, LineError, output_line, parse_line, read_requests
from .jobs import process_requests
from .runner import BatchSummary, run_batch

__all__ = [
    "BatchRequest", "LineError", "BatchSummary", "output_line", "parse_line", "process_requests", "read_requests",
    "run_batch",
]
