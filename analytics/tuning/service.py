"""The tuning loop's logic (no FastAPI): refresh suggestions, accept / reject / roll back them,
verify rollouts. Accepted changes are published through the control plane's PolicyStore (which
validates, versions, audits and pushes); every suggestion state change is audited too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from analytics.controlplane.audit import AuditLog
from analytics.controlplane.auth import Principal
from analytics.controlplane.errors import Conflict, InvalidRequest, NotFound
from analytics.controlplane.policies import PolicyStore
from analytics.tuning.lifecycle import (
    LIVE,
    TransitionError,
    Verdict,
    WindowFigures,
    apply_change,
    check_transition,
    compare,
    latency_allowance_ms,
    revert_change,
)
from analytics.tuning.propose import Proposals, propose
from analytics.tuning.replay import replay
from analytics.tuning.repository import Pin, SuggestionRecord, TuningRepository
from analytics.tuning.rules import Suggestion
from analytics.tuning.stats import edge_stats, group_calls
from collector.store import Store

__all__ = ["SYSTEM", "TuningOptions", "TuningService"]

logger = logging.getLogger(__name__)
SYSTEM = Principal(kind="operator", name="system:tuning")


@dataclass(frozen=True, slots=True)
class TuningOptions:
    """Windows of the loop (seconds), the bucket failures must spread over, and the
    `caller->upstream` edges allowed to retry non-idempotent calls."""

    window_s: float = 900.0
    settle_s: float = 30.0
    verify_window_s: float = 300.0
    bucket_s: float = 10.0
    non_idempotent_opt_in: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.verify_window_s <= 0 or self.bucket_s <= 0:
            raise ValueError("window_s, verify_window_s and bucket_s must be > 0")
        if self.settle_s < 0:
            raise ValueError("settle_s must be >= 0")


def _new_id() -> str:
    # Random: a suggestion that comes back after being superseded is a new record.
    return secrets.token_hex(8)


class TuningService:
    """Suggestions over one store, publishing through `policies` and auditing to `audit`."""

    def __init__(
        self,
        store: Store,
        policies: PolicyStore,
        audit: AuditLog,
        *,
        options: TuningOptions | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = TuningRepository(store)
        self._policies = policies
        self._audit = audit
        self.options = options or TuningOptions()
        self._wall = wall_clock

    async def ensure_tables(self) -> None:
        await self.repo.ensure_tables()

    async def _save(
        self, rec: SuggestionRecord, state: str, actor: Principal, reason: str, **fields: Any
    ) -> SuggestionRecord:
        """Audit first, then store the new state (a change never exists without its entry)."""
        if state != rec.state:
            try:
                check_transition(rec.state, state)
            except TransitionError as exc:
                raise Conflict(str(exc)) from None
        now = self._wall()
        step = {"state": state, "at": now, "actor": actor.name, "reason": reason}
        details = {"kind": rec.kind, "caller": rec.caller, "upstream": rec.upstream}
        details.update({k: v for k, v in fields.items() if k in ("mode", "policy_version")})
        await self._audit.record(
            actor, f"suggestion.{state}", f"suggestion/{rec.id}", reason=reason, details=details
        )
        new = replace(rec, state=state, updated_at=now, history=[*rec.history, step], **fields)
        await self.repo.save([new])
        logger.info(
            "suggestion state changed",
            extra={"suggestion": rec.id, "state": state, "actor": actor.name},
        )
        return new

    async def refresh(self) -> Proposals:
        """Recompute suggestions over the last window; dedupe, supersede stale ones, skip pins."""
        now = self._wall()
        start = now - self.options.window_s
        attempts = await self.repo.attempts(start, now)
        await self._policies.refresh()
        docs = {s: p.document for s, p in self._policies.services().items()}
        found = await asyncio.to_thread(
            propose,
            attempts,
            self.options.window_s,
            docs,
            non_idempotent_opt_in=self.options.non_idempotent_opt_in,
            bucket_s=self.options.bucket_s,
        )
        pins = await self.repo.pins()
        existing = await self.repo.suggestions(limit=10_000)
        # A superseded suggestion may come back; a rejected or rolled-back one is not re-proposed.
        by_print = {r.fingerprint: r for r in existing if r.state != "superseded"}
        fresh: list[SuggestionRecord] = []
        current_prints: set[str] = set()
        for s in found.suggestions:
            if s.edge.caller in pins:
                continue
            current_prints.add(s.fingerprint)
            old = by_print.get(s.fingerprint)
            if old is None:
                fresh.append(self._record(s, start, now))
            elif old.state == "proposed":  # same suggestion: new evidence, same id
                fresh.append(
                    replace(
                        old,
                        evidence=dict(s.evidence),
                        confidence=s.confidence,
                        summary=s.summary,
                        window_start=start,
                        window_end=now,
                        updated_at=now,
                    )
                )
        await self.repo.save(fresh)
        for old in existing:
            stale = old.fingerprint not in current_prints or old.caller in pins
            if old.state == "proposed" and stale:
                why = "pinned" if old.caller in pins else "no longer supported by the traffic"
                await self._save(old, "superseded", SYSTEM, why)
        return found

    @staticmethod
    def _record(s: Suggestion, start: float, now: float) -> SuggestionRecord:
        return SuggestionRecord(
            id=_new_id(),
            fingerprint=s.fingerprint,
            kind=s.kind,
            caller=s.edge.caller,
            upstream=s.edge.upstream,
            route=s.edge.route,
            target=s.target,
            state="proposed",
            summary=s.summary,
            change=dict(s.change),
            evidence=dict(s.evidence),
            confidence=s.confidence,
            window_start=start,
            window_end=now,
            created_at=now,
            updated_at=now,
            history=[{"state": "proposed", "at": now, "actor": SYSTEM.name, "reason": ""}],
        )

    async def suggestions(
        self, *, state: str = "", caller: str = "", limit: int = 500
    ) -> list[SuggestionRecord]:
        return await self.repo.suggestions(state=state, caller=caller, limit=limit)

    async def get(self, suggestion_id: str) -> SuggestionRecord:
        rec = await self.repo.get(suggestion_id)
        if rec is None:
            raise NotFound(f"no suggestion {suggestion_id}")
        return rec

    async def replay(self, rec: SuggestionRecord) -> dict[str, Any]:
        """What the suggestion would have done on the recorded calls of its window."""
        attempts = await self.repo.attempts(
            rec.window_start, rec.window_end, caller=rec.caller, upstream=rec.upstream
        )
        calls = [c for c in group_calls(attempts) if c.first.edge == rec.edge]
        suggestion = Suggestion(
            rec.kind, rec.edge, rec.target, rec.change, rec.evidence, rec.confidence, rec.summary
        )
        result = await asyncio.to_thread(replay, suggestion, calls)
        return result.record()

    async def accept(
        self, actor: Principal, suggestion_id: str, mode: str, reason: str
    ) -> SuggestionRecord:
        """Publish the change (observe-only or enforcing) as a new policy version."""
        actor.require_operator()
        if mode not in ("observe", "enforce"):
            raise InvalidRequest(f"mode must be observe or enforce, not {mode!r}")
        rec = await self.get(suggestion_id)
        if rec.target == "none":
            raise InvalidRequest("an informational finding cannot be accepted")
        if rec.caller in await self.repo.pins():
            raise Conflict(f"the policy of {rec.caller} is pinned by an operator")
        promote = rec.state == "observing" and mode == "enforce"
        if rec.state != "proposed" and not promote:
            raise Conflict(f"a {rec.state} suggestion cannot be accepted ({mode})")
        current = self._policies.current(rec.caller)
        doc = apply_change(
            current.document if current else None,
            rec.caller,
            rec.edge,
            rec.target,
            rec.change,
            observe=mode == "observe",
        )
        policy = await self._policies.put(
            actor,
            rec.caller,
            doc,
            reason=f"suggestion {rec.id} ({rec.kind}, {mode}): {reason}",
            expected_version=current.version if current else 0,
        )
        if not promote:
            rec = await self._save(rec, "accepted", actor, reason, mode=mode)
        state = "enforcing" if mode == "enforce" else "observing"
        previous = rec.previous_version if promote else (current.version if current else 0)
        return await self._save(
            rec,
            state,
            actor,
            reason,
            mode=mode,
            policy_version=policy.version,
            previous_version=previous,
            rolled_out_at=self._wall(),
        )

    async def reject(self, actor: Principal, suggestion_id: str, reason: str) -> SuggestionRecord:
        actor.require_operator()
        return await self._save(await self.get(suggestion_id), "rejected", actor, reason)

    async def rollback(self, actor: Principal, suggestion_id: str, reason: str) -> SuggestionRecord:
        """Undo a rolled-out suggestion: restore the previous version, or revert only its keys
        when other versions were published since."""
        actor.require_operator()
        rec = await self.get(suggestion_id)
        if rec.state not in LIVE:
            raise Conflict(f"a {rec.state} suggestion has nothing to roll back")
        current = self._policies.current(rec.caller)
        if current is not None and current.version == rec.policy_version and rec.previous_version:
            policy = await self._policies.rollback(
                actor, rec.caller, rec.previous_version, reason=f"suggestion {rec.id}: {reason}"
            )
        else:
            previous = (
                await self._policies.get(rec.caller, rec.previous_version)
                if rec.previous_version
                else None
            )
            doc = revert_change(
                current.document if current else {},
                previous.document if previous else None,
                rec.edge,
                rec.target,
                rec.change,
            )
            policy = await self._policies.put(
                actor, rec.caller, doc, reason=f"suggestion {rec.id} reverted: {reason}"
            )
        return await self._save(rec, "rolled_back", actor, reason, policy_version=policy.version)

    async def verify_due(self) -> list[SuggestionRecord]:
        """Judge enforcing rollouts whose after-window has passed; roll back the worse ones."""
        now = self._wall()
        opts = self.options
        done: list[SuggestionRecord] = []
        for rec in await self.repo.suggestions(state="enforcing"):
            after_start = rec.rolled_out_at + opts.settle_s
            after_end = after_start + opts.verify_window_s
            if after_end > now:
                continue
            verdict = await self.judge(rec, after_start, after_end)
            figures = {
                "outcome": verdict.outcome,
                "reasons": list(verdict.reasons),
                "before": _figures(verdict.before),
                "after": _figures(verdict.after),
                "at": now,
            }
            if verdict.outcome == "worse":
                rolled = await self.rollback(
                    SYSTEM, rec.id, "automatic: " + "; ".join(verdict.reasons)
                )
                done.append(await self._store_verification(rolled, figures))
            elif verdict.outcome in ("better", "same"):
                rec = await self._save(rec, "verified", SYSTEM, verdict.outcome)
                done.append(await self._store_verification(rec, figures))
            else:
                await self._store_verification(rec, figures)
        return done

    async def judge(self, rec: SuggestionRecord, after_start: float, after_end: float) -> Verdict:
        """Compare the edge after rollout with before it: the suggestion's evidence window, at
        most three verify windows back from the rollout."""
        before_start = max(rec.window_start, rec.rolled_out_at - 3 * self.options.verify_window_s)
        before_end = min(rec.window_end, rec.rolled_out_at)
        figures = []
        for start, end in ((before_start, before_end), (after_start, after_end)):
            attempts = await self.repo.attempts(
                start, end, caller=rec.caller, upstream=rec.upstream
            )
            stats = await asyncio.to_thread(
                edge_stats, attempts, max(end - start, 1e-3), bucket_s=self.options.bucket_s
            )
            figures.append(WindowFigures.of(stats.get(rec.edge)))
        allowance = latency_allowance_ms(rec.change)
        return compare(figures[0], figures[1], latency_allowance_ms=allowance)

    async def _store_verification(
        self, rec: SuggestionRecord, figures: dict[str, Any]
    ) -> SuggestionRecord:
        new = replace(rec, verification=figures, updated_at=self._wall())
        await self.repo.save([new])
        return new

    async def pin(self, actor: Principal, service: str, pinned: bool, reason: str) -> Pin:
        """Pin (or unpin) a service's policy: tuning never proposes changes to a pinned one."""
        actor.require_operator()
        pin = Pin(service, pinned, actor.name, reason, self._wall())
        await self._audit.record(
            actor, "policy.pin" if pinned else "policy.unpin", f"policy/{service}", reason=reason
        )
        await self.repo.set_pin(pin)
        return pin

    async def pins(self) -> dict[str, Pin]:
        return await self.repo.pins()


def _figures(f: WindowFigures) -> dict[str, Any]:
    return {
        "requests": f.requests,
        "error_rate": round(f.error_rate, 5),
        "p99_ms": round(f.p99_ms, 2),
        "goodput_rps": round(f.goodput_rps, 3),
        "rps": round(f.rps, 3),
    }
