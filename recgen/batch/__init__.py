"""Offline batch jobs: JSONL requests in, OpenAI-batch-shaped JSONL results out, resumable after a crash."""

from .jobs import process_requests
from .requests import BatchRequest, LineError, parse_line, read_requests
from .results import output_line
from .runner import BatchSummary, run_batch

__all__ = [
    "BatchRequest", "LineError", "BatchSummary", "output_line", "parse_line", "process_requests", "read_requests",
    "run_batch",
]
