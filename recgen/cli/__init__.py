"""The ``recgen`` command line (Typer)."""
