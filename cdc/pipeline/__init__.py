"""A run of the pipeline: slot -> decoder -> transactions -> collector -> buffer -> flusher -> acknowledgement."""

from __future__ import annotations

from .pipeline import Pipeline, PipelineError, RunSummary

__all__ = ["Pipeline", "PipelineError", "RunSummary"]
