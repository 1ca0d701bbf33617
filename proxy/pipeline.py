"""The hot path: policy → identity → one history read → features → models → decision → act.

Everything after the response (history append, prediction record, step-up grant) runs in a
background task so it never delays the client. A failure in the scoring path becomes the
rule's fail policy (open: forward, recorded as ERROR; closed: 503), never a 500.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import hdrs, web
from redis.exceptions import RedisError

from config.settings import Settings
from proxy.breaker import Breaker, CircuitOpen
from proxy.enforce import (
    RulePolicy,
    block_response,
    compile_policies,
    revoked_response,
    step_up_response,
    unavailable_response,
)
from proxy.errors import json_error
from proxy.forward import Forwarder, declared_length
from proxy.identity import Identity, IdentityError, IdentityResolver
from proxy.metrics import Metrics
from proxy.models import ModelHolder
from proxy.notify import Notifier
from proxy.paths import PathMatch, PathPolicy
from proxy.websocket import is_websocket_upgrade
from scoring.context import EventOutcome, HistorySnapshot, RequestContext
from scoring.decision import Decision, decide
from scoring.ensemble import ScoreResult
from scoring.explain import explain
from scoring.features import FEATURE_SET_VERSION, extract
from storage.history import HistoryStore
from storage.records import Incident, PredictionRecord, new_prediction_id
from storage.store import Store
from storage.writer import PredictionWriter

log = structlog.get_logger("behaviorgate")

_DEPENDENCY_ERRORS = (RedisError, ConnectionError, OSError, TimeoutError, CircuitOpen)
_MAX_UA = 512


@dataclass(slots=True)
class Verdict:
    """What the scoring path concluded for one request."""

    decision: Decision  # what the models say (recorded)
    enforced: Decision  # what the gateway does
    result: ScoreResult | None
    vector: Any
    note: str | None = None
    explanation: dict[str, Any] | None = None


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        forwarder: Forwarder,
        policy: PathPolicy,
        identity: IdentityResolver,
        history: HistoryStore,
        models: ModelHolder,
        writer: PredictionWriter,
        store: Store,
        notifier: Notifier,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.forwarder = forwarder
        self.policy = policy
        self.identity = identity
        self.history = history
        self.models = models
        self.writer = writer
        self.store = store
        self.notifier = notifier
        self.metrics = metrics
        self.rules = compile_policies(
            settings.policy, settings.model.thresholds, settings.enforcement, settings.mode
        )
        enf = settings.enforcement
        self.breaker = Breaker(
            enf.breaker.failures,
            enf.breaker.reset_seconds,
            min_failure_seconds=enf.breaker.min_failure_seconds,
        )
        self._budget = settings.scoring.budget_ms / 1000
        self._tz = settings.history.timezone
        self._verify_path = enf.stepup.verify_path
        self._verify_methods = frozenset(m.upper() for m in enf.stepup.verify_methods)
        self._headers_on = settings.forwarding.decision_headers
        self._expose = settings.forwarding.expose_decision_to_client
        self._tasks: set[asyncio.Task[None]] = set()
        trusted = settings.identity.trusted_header
        self._identity_headers = frozenset(
            h.lower()
            for h in (trusted.user_header, trusted.session_header, trusted.roles_header)
            if h
        )

    # -- helpers ---------------------------------------------------------------------------------

    def forwarded_headers(
        self, request: web.BaseRequest, peer: str, client_ip: str
    ) -> dict[str, str]:
        if not self.settings.forwarding.set_x_forwarded:
            return {}
        # A trusted proxy's chain is extended; anyone else's is replaced by what we saw.
        chain = ", ".join([*_xff(request), peer]) if peer in self.identity.trusted_proxies else peer
        return {
            "X-Forwarded-For": chain,
            "X-Forwarded-Proto": request.scheme,
            "X-Forwarded-Host": request.headers.get(hdrs.HOST, ""),
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for after-response work (shutdown and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- the request -----------------------------------------------------------------------------

    async def handle(self, request: web.Request, request_id: str) -> web.StreamResponse:
        started = time.perf_counter()
        match = self.policy.match(request.method, request.raw_path)
        peer = request.remote or ""
        client_ip = self.identity.client_ip(peer, request.headers)
        if match.rejected:
            log_refused(
                self.settings, request, request_id, 400, "bad_path", started, client_ip=client_ip
            )
            return json_error(400, "bad_path", match.rejected)
        forwarded = self.forwarded_headers(request, peer, client_ip)
        drop = self._identity_headers if peer not in self.identity.trusted_proxies else frozenset()
        if match.exempt or not self.settings.scoring.enabled:
            response = await self._forward(request, forwarded, {"X-Request-ID": request_id}, drop)
            if (
                self._is_verification(request.method, match.normalized)
                and 200 <= response.status < 300
            ):
                await self._grant_unscored(request, peer, client_ip)
            self._log_unscored(request, request_id, match, client_ip, response.status, started)
            return response
        try:
            ident = self.identity.resolve(request.headers, peer, client_ip)
        except IdentityError as exc:
            self._log_unscored(
                request, request_id, match, client_ip, 401, started, reason=exc.reason
            )
            return json_error(401, exc.reason, "the request's credentials were not accepted")
        rule = self.rules.get(match.rule_name) or self.rules["default"]
        now = time.time()
        ctx = RequestContext(
            ts=now,
            method=request.method,
            path=match.normalized,
            route=match.route,
            user_id=ident.user_id,
            session_id=ident.session_id,
            client_ip=client_ip,
            user_agent=request.headers.get(hdrs.USER_AGENT, "")[:_MAX_UA],
            request_bytes=declared_length(request) or 0,
            sensitivity=match.sensitivity,
            authenticated=ident.source != "anonymous",
        )
        verdict = await self._score(ctx, rule, match)
        if verdict is None:  # session revoked: no scoring, no forwarding
            self.metrics.requests.labels("REVOKED", rule.name).inc()
            log_refused(
                self.settings,
                request,
                request_id,
                403,
                "session_revoked",
                started,
                client_ip=client_ip,
                rule=rule.name,
                user_id=ident.user_id,
                session_id=ident.session_id[:64],
            )
            return revoked_response()
        prediction_id = new_prediction_id(now)
        scoring_ms = (time.perf_counter() - started) * 1000
        self.metrics.scoring_seconds.observe(scoring_ms / 1000)
        self.metrics.requests.labels(verdict.decision.value, rule.name).inc()
        if verdict.result is not None:
            self.metrics.scores.observe(verdict.result.composite)

        response = await self._act(
            request, request_id, ident, ctx, rule, verdict, prediction_id, forwarded, drop
        )
        self._after(
            request_id,
            ctx,
            ident,
            rule,
            match,
            verdict,
            prediction_id,
            response,
            scoring_ms,
            started,
        )
        return response

    def _log_unscored(
        self,
        request: web.Request,
        request_id: str,
        match: PathMatch,
        client_ip: str,
        status: int,
        started: float,
        reason: str | None = None,
    ) -> None:
        """Access event of a request answered unscored (exempt, or refused at identity)."""
        if not self.settings.logging.access_log:
            return
        log.info(
            "request",
            request_id=request_id,
            method=request.method,
            rule=match.rule_name,
            client_ip=client_ip,
            status=status,
            decision="UNAUTHENTICATED" if reason else "UNSCORED",
            reason=reason,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def _forward(
        self,
        request: web.Request,
        forwarded: dict[str, str],
        extra: dict[str, str],
        drop: frozenset[str],
        response_headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        if is_websocket_upgrade(request):
            return await self.forwarder.forward_websocket(
                request, forwarded=forwarded, extra_headers=extra, drop=drop
            )
        started = time.perf_counter()
        response = await self.forwarder.forward(
            request,
            forwarded=forwarded,
            extra_headers=extra,
            response_headers=response_headers,
            drop=drop,
        )
        self.metrics.upstream_seconds.observe(time.perf_counter() - started)
        return response

    async def _score(
        self, ctx: RequestContext, rule: RulePolicy, match: PathMatch
    ) -> Verdict | None:
        try:
            self.breaker.before()
            async with asyncio.timeout(self._budget):
                snapshot = await self.history.read(ctx)
            self.breaker.success()
        except _DEPENDENCY_ERRORS as exc:
            if isinstance(exc, CircuitOpen):
                self.metrics.unscored.labels("breaker_open").inc()
            else:
                self.breaker.failure()
                self.metrics.dependency_errors.labels("redis").inc()
                reason = "redis_timeout" if isinstance(exc, TimeoutError) else "redis_error"
                self.metrics.unscored.labels(reason).inc()
            return Verdict(
                Decision.ERROR,
                Decision.ERROR,
                None,
                None,
                note=f"history unavailable ({type(exc).__name__})",
            )
        if snapshot.revoked:
            return None
        try:
            vector = extract(snapshot, ctx, ctx.ts, self._tz)
            active = self.models.current
            if active is None:
                return Verdict(Decision.LEARNING, Decision.ALLOW, None, vector)
            result = active.scorer.score(vector)
            decision = decide(result.composite, rule.thresholds, strict=rule.strict)
        except Exception as exc:  # noqa: BLE001 - a model bug becomes the fail policy, never a 500
            self.metrics.dependency_errors.labels("model").inc()
            self.metrics.unscored.labels("model_error").inc()
            log.error("scoring_failed", error=str(exc)[:200])
            return Verdict(Decision.ERROR, Decision.ERROR, None, None, note="model error")
        verdict = Verdict(decision, decision, result, vector)
        if decision.severity >= Decision.MONITOR.severity:
            verdict.explanation = explain(active.scorer, vector).to_json()
        await self._relax_or_escalate(verdict, ctx, rule, snapshot)
        return verdict

    async def _relax_or_escalate(
        self, verdict: Verdict, ctx: RequestContext, rule: RulePolicy, snapshot: HistorySnapshot
    ) -> None:
        decision = verdict.decision
        if decision in (Decision.CHALLENGE, Decision.REQUIRE_2FA):
            if snapshot.stepup_until is not None and snapshot.stepup_until > ctx.ts:
                verdict.enforced, verdict.note = Decision.ALLOW, "step-up satisfied"
                return
            if self._is_verification(ctx.method, ctx.path):
                # Challenging the step-up itself would lock the user out; BLOCK still applies.
                verdict.enforced, verdict.note = Decision.ALLOW, "step-up verification"
                return
            esc = self.settings.enforcement.escalation
            if (
                esc.enabled
                and rule.mode == "enforce"
                and not rule.allowlisted(ctx.user_id, ctx.client_ip)
            ):
                try:
                    count = await self.history.count_challenge(
                        ctx.session_id, ctx.user_id, esc.window_seconds, ctx.ts
                    )
                except _DEPENDENCY_ERRORS:
                    count = 0
                if count >= esc.challenges:
                    verdict.decision = verdict.enforced = Decision.BLOCK
                    verdict.note = f"escalated: {count} step-ups within {esc.window_seconds}s"
        if rule.allowlisted(ctx.user_id, ctx.client_ip):
            verdict.enforced, verdict.note = Decision.ALLOW, "allowlisted"
        elif rule.mode == "shadow":
            verdict.enforced, verdict.note = Decision.ALLOW, "shadow mode"

    async def _act(
        self,
        request: web.Request,
        request_id: str,
        ident: Identity,
        ctx: RequestContext,
        rule: RulePolicy,
        verdict: Verdict,
        prediction_id: str,
        forwarded: dict[str, str],
        drop: frozenset[str],
    ) -> web.StreamResponse:
        enforced = verdict.enforced
        enf = self.settings.enforcement
        if enforced is Decision.ERROR:
            if rule.fail_closed and rule.mode == "enforce":
                return unavailable_response()
        elif enforced in (Decision.CHALLENGE, Decision.REQUIRE_2FA):
            self.metrics.stepups.labels("issued").inc()
            return step_up_response(enforced, prediction_id, enf)
        elif enforced is Decision.BLOCK:
            await self._block(ident, ctx, rule, verdict, prediction_id)
            return block_response(prediction_id, enf.report_path)
        extra = {"X-Request-ID": request_id}
        decision_headers = self._decision_headers(verdict, prediction_id)
        if self._headers_on:
            extra.update(decision_headers)
        return await self._forward(
            request, forwarded, extra, drop, decision_headers if self._expose else None
        )

    def _decision_headers(self, verdict: Verdict, prediction_id: str) -> dict[str, str]:
        headers = {
            "X-BehaviorGate-Decision": verdict.decision.value,
            "X-BehaviorGate-Prediction-Id": prediction_id,
        }
        if verdict.result is not None:
            headers["X-BehaviorGate-Score"] = f"{verdict.result.composite:.4f}"
        return headers

    async def _block(
        self,
        ident: Identity,
        ctx: RequestContext,
        rule: RulePolicy,
        verdict: Verdict,
        prediction_id: str,
    ) -> None:
        ttl = self.settings.enforcement.revocation_ttl_seconds
        if ident.token_exp is not None:
            ttl = max(60, min(ttl, int(ident.token_exp - ctx.ts) + 60))
        try:
            # Awaited: the very next request of this session, on any replica, must see it.
            await self.history.revoke(ctx.session_id, ctx.user_id, ttl)
        except _DEPENDENCY_ERRORS:
            self.metrics.dependency_errors.labels("redis").inc()
            log.error("revocation_failed", session_id=ctx.session_id)
        incident = Incident(
            prediction_id=prediction_id,
            session_id=ctx.session_id,
            user_id=ctx.user_id,
            client_ip=ctx.client_ip,
            route=ctx.route,
            rule=rule.name,
            composite=None if verdict.result is None else verdict.result.composite,
            reason=verdict.note or "composite score at BLOCK",
        )
        self._spawn(self._open_incident(incident))
        self.notifier.notify(
            "escalation" if verdict.note and verdict.note.startswith("escalated") else "block",
            {
                "predictionId": prediction_id,
                "sessionId": ctx.session_id,
                "userId": ctx.user_id,
                "clientIp": ctx.client_ip,
                "route": ctx.route,
                "rule": rule.name,
                "score": incident.composite,
                "reason": incident.reason,
            },
        )

    async def _open_incident(self, incident: Incident) -> None:
        try:
            await self.store.open_incident(incident)
        except Exception as exc:  # noqa: BLE001 - the block stands; the record is retried by nobody, so log loudly
            self.metrics.dependency_errors.labels("postgres").inc()
            log.error(
                "incident_not_recorded", session_id=incident.session_id, error=type(exc).__name__
            )

    # -- after the response ----------------------------------------------------------------------

    def _after(
        self,
        request_id: str,
        ctx: RequestContext,
        ident: Identity,
        rule: RulePolicy,
        match: PathMatch,
        verdict: Verdict,
        prediction_id: str,
        response: web.StreamResponse,
        scoring_ms: float,
        started: float,
    ) -> None:
        total_ms = (time.perf_counter() - started) * 1000
        status = response.status
        result = verdict.result
        record = PredictionRecord(
            id=prediction_id,
            session_id=ctx.session_id,
            user_id=ctx.user_id,
            method=ctx.method,
            route=ctx.route,
            rule=rule.name,
            client_ip=ctx.client_ip,
            features=verdict.vector if verdict.vector is not None else (),
            iforest_score=None if result is None else result.iforest,
            autoencoder_score=None if result is None else result.autoencoder,
            composite=None if result is None else result.composite,
            decision=verdict.decision.value,
            is_anomaly=verdict.decision.is_anomaly,
            explanation=_explanation(verdict),
            model_version=self.models.version if result is not None else None,
            feature_set_version=FEATURE_SET_VERSION,
            processing_ms=scoring_ms,
            upstream_status=status,
            confidence=None if result is None else result.confidence,
            agreement=None if result is None else result.model_agreement,
        )
        self.writer.enqueue(record)
        if verdict.vector is not None:
            outcome = EventOutcome(
                status=status,
                response_bytes=int(getattr(response, "body_length", 0) or 0),
                latency_ms=total_ms,
                decision=verdict.decision.value if verdict.decision.severity else "ALLOW",
                score=0.0 if result is None else result.composite,
            )
            self._spawn(self._record(ctx, outcome))
        if (
            200 <= status < 300
            and verdict.enforced not in (Decision.BLOCK, Decision.CHALLENGE, Decision.REQUIRE_2FA)
            and self._is_verification(ctx.method, match.normalized)
        ):
            self._spawn(self._grant(ctx.session_id, ctx.user_id, ctx.ts))
        if self.settings.logging.access_log:
            level = log.warning if verdict.decision.severity >= 1 else log.info
            level(
                "request",
                request_id=request_id,
                prediction_id=prediction_id,
                method=ctx.method,
                route=ctx.route,
                rule=rule.name,
                user_id=ident.user_id,
                session_id=ident.session_id[:64],
                client_ip=ctx.client_ip,
                decision=verdict.decision.value,
                enforced=verdict.enforced.value,
                score=None if result is None else round(result.composite, 4),
                status=status,
                note=verdict.note,
                latency_ms=round(total_ms, 3),
            )

    async def _record(self, ctx: RequestContext, outcome: EventOutcome) -> None:
        try:
            await self.history.record(ctx, outcome)
        except _DEPENDENCY_ERRORS:
            self.metrics.dependency_errors.labels("redis").inc()

    def _is_verification(self, method: str, normalized_path: str) -> bool:
        return method in self._verify_methods and normalized_path == self._verify_path

    async def _grant_unscored(self, request: web.Request, peer: str, client_ip: str) -> None:
        """A verification on an exempt path still grants the step-up to the caller's session."""
        try:
            ident = self.identity.resolve(request.headers, peer, client_ip)
        except IdentityError:
            return
        self._spawn(self._grant(ident.session_id, ident.user_id, time.time()))

    async def _grant(self, session_id: str, user_id: str | None, now: float) -> None:
        try:
            await self.history.grant_stepup(
                session_id, user_id, self.settings.enforcement.stepup.grant_ttl_seconds, now=now
            )
            self.metrics.stepups.labels("completed").inc()
        except _DEPENDENCY_ERRORS:
            self.metrics.dependency_errors.labels("redis").inc()


def log_refused(
    settings: Settings,
    request: web.BaseRequest,
    request_id: str,
    status: int,
    reason: str,
    started: float,
    **identity: str | None,
) -> None:
    """Access event of a request the gateway answered itself before scoring it (limits, a path it
    will not route, a revoked session), so every request leaves one event."""
    if not settings.logging.access_log:
        return
    log.info(
        "request",
        request_id=request_id,
        method=request.method,
        client_ip=identity.pop("client_ip", None) or request.remote or "",
        status=status,
        decision="REFUSED",
        reason=reason,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        **identity,
    )


def _explanation(verdict: Verdict) -> dict[str, Any] | None:
    if verdict.explanation is None and verdict.note is None:
        return None
    out = dict(verdict.explanation or {})
    if verdict.note:
        out["note"] = verdict.note
    if verdict.enforced is not verdict.decision:
        out["enforced"] = verdict.enforced.value
    return out


def _xff(request: web.BaseRequest) -> list[str]:
    values = request.headers.getall("X-Forwarded-For", [])
    return [p.strip() for v in values for p in v.split(",") if p.strip()]
