"""Renderers: one `Plan` value, three views — text (terminals), JSON (the artifact),
Markdown (pull-request comments) — plus the review-mode report."""

from __future__ import annotations

from reconciler.render.document import plan_from_json, plan_to_json, summary
from reconciler.render.markdown import LIMIT, render_markdown
from reconciler.render.text import render_text

__all__ = ["LIMIT", "plan_from_json", "plan_to_json", "render_markdown", "render_text", "summary"]
