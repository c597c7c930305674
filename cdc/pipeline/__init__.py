"""One slot's pipeline: ``build`` wires the parts, ``Pipeline.run`` streams (see docs/architecture.md)."""

from __future__ import annotations

from .build import build
from .pipeline import Pipeline, PipelineError, RunSummary

__all__ = ["Pipeline", "PipelineError", "RunSummary", "build"]
