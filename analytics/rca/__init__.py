"""Root-cause ranking: which services an incident most likely started in, with the evidence."""

from __future__ import annotations

from analytics.rca.ranking import Candidate, SpanRow, rank_root_causes, with_logged_errors

__all__ = ["Candidate", "SpanRow", "rank_root_causes", "with_logged_errors"]
