"""Release actions (admin): unblock a session, clear a user's escalation, reset a baseline.

Each action is recorded as an incident row with status ``released`` naming the admin who did it
(and, for an unblock given an incident id, that incident is marked released by them too).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from proxy.api import deps
from proxy.api.auth import Caller
from proxy.api.http import ApiError, bad, body_str, only_keys, read_json
from proxy.api.routing import Route
from storage.records import NOTES_LIMIT, Incident

log = structlog.get_logger("behaviorgate.api")


def _notes(doc: dict[str, Any]) -> str:
    notes = doc.get("notes", "")
    if not isinstance(notes, str) or len(notes) > NOTES_LIMIT:
        raise bad("notes", f"must be a string of at most {NOTES_LIMIT} characters")
    return notes


async def _record(
    request: web.Request,
    caller: Caller,
    action: str,
    *,
    session_id: str | None,
    user_id: str | None,
    notes: str,
    result: dict[str, Any],
) -> dict[str, Any]:
    incident = await deps.store(request).open_incident(
        Incident(
            status="released",
            session_id=session_id,
            user_id=user_id,
            reason=f"release:{action}",
            actor=caller.actor,
            notes=notes,
            details={"action": action, **result},
        )
    )
    log.warning("release", action=action, by=caller.actor, user_id=user_id, session_id=session_id)
    return {"action": action, "by": caller.actor, "recordId": incident.id, **result}


async def unblock(request: web.Request, caller: Caller | None) -> dict[str, Any]:
    assert caller is not None
    doc = await read_json(request, deps.settings(request).api.max_body_bytes)
    only_keys(doc, {"sessionId", "userId", "incidentId", "notes"})
    notes = _notes(doc)
    incident_id = doc.get("incidentId")
    store = deps.store(request)
    if incident_id is not None:
        if (
            isinstance(incident_id, bool)
            or not isinstance(incident_id, int)
            or not 1 <= incident_id < 2**63
        ):
            raise bad("incidentId", "must be a positive integer")
        incident = await store.get_incident(incident_id)
        if incident is None:
            raise ApiError(404, "not_found", "no such incident")
        session_id, user_id = incident.session_id, incident.user_id
        if session_id is None:
            raise bad("incidentId", "that incident names no session")
    else:
        session_id = body_str(doc, "sessionId")
        user_id = body_str(doc, "userId", required=False)
    assert session_id is not None
    history = deps.history(request)
    if user_id is not None or incident_id is not None:
        # An incident names its owner exactly (None = the anonymous session): only that one.
        released: list[str | None] = (
            [user_id] if await history.unrevoke(session_id, user_id) else []
        )
    else:
        released = await history.unrevoke_all(session_id)
        if len(released) == 1:
            user_id = released[0]
    # A released owner's recent step-up demands go too: left in place, the escalation rule would
    # block the very next request again (after N step-ups within the window).
    cleared = [owner for owner in released if await history.clear_escalation(owner, session_id)]
    if incident_id is not None:
        await store.update_incident(
            incident_id, status="released", actor=caller.actor, notes=notes or None
        )
    return await _record(
        request,
        caller,
        "unblock",
        session_id=session_id,
        user_id=user_id,
        notes=notes,
        result={
            "wasRevoked": bool(released),
            "incidentId": incident_id,
            # Whose revocation was lifted (null = the anonymous session of that id).
            "releasedOwners": released,
            "escalationCleared": bool(cleared),
        },
    )


async def clear_escalation(request: web.Request, caller: Caller | None) -> dict[str, Any]:
    assert caller is not None
    doc = await read_json(request, deps.settings(request).api.max_body_bytes)
    only_keys(doc, {"userId", "notes"})
    user_id = body_str(doc, "userId")
    cleared = await deps.history(request).clear_escalation(user_id)
    return await _record(
        request,
        caller,
        "clear-escalation",
        session_id=None,
        user_id=user_id,
        notes=_notes(doc),
        result={"cleared": cleared},
    )


async def reset_user(request: web.Request, caller: Caller | None) -> dict[str, Any]:
    assert caller is not None
    doc = await read_json(request, deps.settings(request).api.max_body_bytes)
    only_keys(doc, {"userId", "notes"})
    user_id = body_str(doc, "userId")
    assert user_id is not None
    deleted = await deps.history(request).reset_user(user_id)
    return await _record(
        request,
        caller,
        "reset-user",
        session_id=None,
        user_id=user_id,
        notes=_notes(doc),
        result={"keysDeleted": deleted},
    )


ROUTES = [
    Route("POST", "/release/unblock", unblock, "admin"),
    Route("POST", "/release/clear-escalation", clear_escalation, "admin"),
    Route("POST", "/release/reset-user", reset_user, "admin"),
]
