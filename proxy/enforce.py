"""What the gateway answers when it acts instead of the upstream, and per-rule enforcement facts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from config.enforcement import EnforcementSettings
from config.model import ThresholdSettings
from config.policy import PathRule, PolicySettings
from proxy.errors import json_error, json_response
from scoring.decision import Decision

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RulePolicy:
    """A rule's enforcement settings, resolved once at start-up."""

    name: str
    thresholds: ThresholdSettings
    strict: bool
    mode: str
    fail_closed: bool
    allow_users: frozenset[str]
    allow_networks: tuple[IPNetwork, ...]

    def allowlisted(self, user_id: str | None, client_ip: str) -> bool:
        if user_id is not None and user_id in self.allow_users:
            return True
        if not self.allow_networks:
            return False
        try:
            addr = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(addr in net for net in self.allow_networks)


def merged_thresholds(base: ThresholdSettings, rule: PathRule | None) -> ThresholdSettings:
    """The global ladder with a rule's overrides applied (re-validated, so order still holds)."""
    if rule is None or rule.thresholds is None:
        return base
    changes = {k: v for k, v in rule.thresholds.model_dump().items() if v is not None}
    return ThresholdSettings.model_validate({**base.model_dump(), **changes})


def compile_policies(
    policy: PolicySettings, base: ThresholdSettings, enforcement: EnforcementSettings, mode: str
) -> dict[str, RulePolicy]:
    """One `RulePolicy` per rule name, plus the default for paths no rule matched."""
    out = {
        "default": RulePolicy(
            "default", base, False, mode, enforcement.default_fail == "closed", frozenset(), ()
        )
    }
    for rule in policy.rules:
        out[rule.name] = RulePolicy(
            name=rule.name,
            thresholds=merged_thresholds(base, rule),
            strict=rule.strict,
            mode=rule.mode or mode,
            fail_closed=(rule.fail or ("closed" if rule.strict else enforcement.default_fail))
            == "closed",
            allow_users=frozenset(rule.allowlist.users),
            allow_networks=tuple(
                ipaddress.ip_network(c, strict=False) for c in rule.allowlist.cidrs
            ),
        )
    return out


def step_up_response(
    decision: Decision, prediction_id: str, settings: EnforcementSettings
) -> web.Response:
    """401 for CHALLENGE / REQUIRE_2FA: what to do, where, and how to contest it."""
    stepup = settings.stepup
    method = (
        stepup.require_2fa_method if decision is Decision.REQUIRE_2FA else stepup.challenge_method
    )
    body = {
        "success": False,
        "error": {"code": "step_up_required", "message": "additional verification is required"},
        "action": decision.value,
        "predictionId": prediction_id,
        "stepUp": {"method": method, "verifyPath": stepup.verify_path},
        "retryAfterSeconds": stepup.retry_after_seconds,
        "report": _report(settings.report_path, prediction_id),
    }
    headers = {
        "WWW-Authenticate": (
            f'StepUp realm="behaviorgate", method="{method}", prediction_id="{prediction_id}"'
        ),
        "Retry-After": str(stepup.retry_after_seconds),
        "Cache-Control": "no-store",
    }
    return json_response(401, body, headers)


def _report(path: str, prediction_id: str) -> dict[str, object]:
    return {
        "method": "POST",
        "path": path.replace("{id}", prediction_id),
        "body": {"isFalsePositive": True},
    }


def block_response(prediction_id: str, report_path: str) -> web.Response:
    body = {
        "success": False,
        "error": {
            "code": "session_blocked",
            "message": "this session has been blocked after unusual activity",
        },
        "action": Decision.BLOCK.value,
        "predictionId": prediction_id,
        "report": _report(report_path, prediction_id),
    }
    return json_response(403, body, {"Cache-Control": "no-store"})


def revoked_response() -> web.Response:
    body = {
        "success": False,
        "error": {"code": "session_revoked", "message": "this session was revoked; sign in again"},
        "action": Decision.BLOCK.value,
    }
    return json_response(403, body, {"Cache-Control": "no-store"})


def unavailable_response() -> web.Response:
    return json_error(
        503,
        "scoring_unavailable",
        "this path requires a risk check that cannot run right now; retry shortly",
        headers={"Retry-After": "2", "Cache-Control": "no-store"},
    )
