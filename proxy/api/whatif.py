"""``POST /thresholds/what-if`` (admin): replay proposed thresholds over stored predictions.

Each stored prediction keeps its composite score and rule, so the ladder can be re-run exactly:
for every prediction of the window, the decision under the rule's current thresholds is compared
with the decision under the proposal. The answer counts, per rule and overall, how many decisions
would change and between which kinds. Step-up grants, escalation and allowlists are not replayed
(they depend on state at the time); predictions without a score (learning, errors) are skipped.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from config.loader import plain_message
from config.model import ThresholdSettings
from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import Window, bad, body_number, read_json
from proxy.api.routing import Route
from proxy.enforce import RulePolicy
from scoring.decision import decide

_KEYS = {
    "monitor": "monitor",
    "challenge": "challenge",
    "require2fa": "require_2fa",
    "block": "block",
    "strictBlock": "strict_block",
}
_PAGE = 1000


def _changes(doc: Any, where: str) -> dict[str, float]:
    if not isinstance(doc, dict):
        raise bad(where, "must be an object")
    out = {}
    for key in doc:
        if key not in _KEYS:
            raise bad(f"{where}.{str(key)[:100]}", "unknown threshold")
        value = body_number(doc, key, 0.0, 1.0)
        if value is not None:
            out[_KEYS[key]] = value
    return out


def proposed(rules: dict[str, RulePolicy], doc: dict[str, Any]) -> dict[str, ThresholdSettings]:
    """Each rule's thresholds under the proposal: current, then global changes, then its own."""
    for key in doc:
        if key not in ("hours", "thresholds", "rules"):
            raise bad(str(key)[:100], "unknown field")
    glob = _changes(doc.get("thresholds", {}), "thresholds")
    per_rule = doc.get("rules", {})
    if not isinstance(per_rule, dict):
        raise bad("rules", "must be an object keyed by rule name")
    for name in per_rule:
        if name not in rules:
            raise bad(f"rules.{str(name)[:100]}", "no such rule")
    if not glob and not per_rule:
        raise bad("thresholds", "give thresholds and/or rules to change")
    out = {}
    for name, rule in rules.items():
        own = _changes(per_rule[name], f"rules.{name}") if name in per_rule else {}
        try:
            out[name] = ThresholdSettings.model_validate(
                {**rule.thresholds.model_dump(), **glob, **own}
            )
        except ValidationError as exc:
            field = f"rules.{name}" if own else "thresholds"
            # Said in the API's key names (require2fa, strictBlock), not the settings' ones.
            msg = plain_message(exc.errors()[0]).replace("require_2fa", "require2fa")
            raise bad(field, msg.replace("strict_block", "strictBlock")[:200]) from None
    return out


def _tally() -> dict[str, Any]:
    return {
        "predictions": 0,
        "changed": 0,
        "before": Counter(),
        "after": Counter(),
        "transitions": Counter(),
    }


def _finish(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "predictions": t["predictions"],
        "changed": t["changed"],
        "before": dict(t["before"]),
        "after": dict(t["after"]),
        "transitions": [
            {"from": a, "to": b, "count": n} for (a, b), n in sorted(t["transitions"].items())
        ],
    }


async def post_what_if(request: web.Request, _: Caller | None) -> dict[str, Any]:
    api = deps.settings(request).api
    doc = await read_json(request, api.max_body_bytes)
    hours = doc.get("hours", 24)
    if (
        isinstance(hours, bool)
        or not isinstance(hours, int)
        or not 1 <= hours <= api.max_window_hours
    ):
        raise bad("hours", f"must be an integer between 1 and {api.max_window_hours}")
    rules = deps.pipeline(request).rules
    plan = proposed(rules, doc)
    end = datetime.now(UTC) + timedelta(microseconds=1)
    w = Window(end - timedelta(hours=hours), end, hours)
    per_rule: dict[str, dict[str, Any]] = {}
    overall, skipped, read, before_id, truncated = _tally(), 0, 0, None, False
    store = deps.store(request)
    while True:
        page = await store.list_predictions(w.start, w.end, limit=_PAGE, before_id=before_id)
        for rec in page:
            if rec.composite is None:
                skipped += 1
                continue
            name = rec.rule if rec.rule in rules else "default"
            rule = rules[name]
            a = decide(rec.composite, rule.thresholds, strict=rule.strict).value
            b = decide(rec.composite, plan[name], strict=rule.strict).value
            for t in (overall, per_rule.setdefault(name, _tally())):
                t["predictions"] += 1
                t["before"][a] += 1
                t["after"][b] += 1
                if a != b:
                    t["changed"] += 1
                    t["transitions"][(a, b)] += 1
        read += len(page)
        if len(page) < _PAGE:
            break
        if read >= api.what_if_max_records:
            truncated = True
            break
        before_id = page[-1].id
    return {
        "hours": hours,
        "overall": _finish(overall),
        "rules": {name: _finish(t) for name, t in sorted(per_rule.items())},
        "skipped": skipped,
        "truncated": truncated,
        "proposed": {
            name: {k: getattr(v, f) for k, f in _KEYS.items()} for name, v in plan.items()
        },
    }


ROUTES = [Route("POST", "/thresholds/what-if", post_what_if, "admin")]
