"""CLI and orchestration of the FG-SSL benchmark: config, runs, sweeps, tracking."""

__version__ = "0.1.0"
