"""An ExpenseFlow-like API to put behind the gateway in demos, tests and benchmarks.

Login issues an HS256 JWT carrying the user (`sub`), a session id (`sid`) and a role; every other
route checks it. Latencies and body sizes are in the range of a small real service, scaled by
`latency_scale` (0 for benchmarks that measure the gateway, not the upstream).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from typing import Any

import jwt
import orjson
from aiohttp import web

#: The demo API's token signing key, public on purpose; a real deployment has its own API.
DEFAULT_JWT_SECRET = "demo-secret-change-me-0123456789abcdef"  # noqa: S105
#: Environment variable carrying the signing key (kept off the command line, where `ps` shows it).
JWT_SECRET_ENV = "BEHAVIORGATE_DEMO_JWT_SECRET"  # noqa: S105

USERS = {f"user{i}": "pass" for i in range(1, 201)} | {"admin": "admin"}
ADMINS = frozenset({"admin"})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


class SampleApi:
    def __init__(self, jwt_secret: str, latency_scale: float) -> None:
        self.secret = jwt_secret
        self.scale = latency_scale
        self.transactions: dict[int, dict[str, Any]] = {
            i: {
                "id": i,
                "amount": round(10 + (i * 37) % 900, 2),
                "currency": "EUR",
                "memo": f"txn {i}",
            }
            for i in range(1, 501)
        }
        self.next_id = 501

    async def pause(self, base_ms: float) -> None:
        if self.scale > 0:
            await asyncio.sleep(base_ms * self.scale * random.uniform(0.6, 1.6) / 1000)

    def issue(self, user: str, *, sid: str | None = None, mfa: bool = False) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "sid": sid or secrets.token_hex(8),
            "role": "admin" if user in ADMINS else "user",
            "mfa": mfa,
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def claims(self, request: web.Request) -> dict[str, Any]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            raise web.HTTPUnauthorized(
                text='{"error":"missing token"}', content_type="application/json"
            )
        try:
            return jwt.decode(auth[7:], self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise web.HTTPUnauthorized(
                text='{"error":"invalid token"}', content_type="application/json"
            ) from None

    async def login(self, request: web.Request) -> web.Response:
        await self.pause(40)
        try:
            body = await request.json()
            user, password = str(body["username"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": "username and password required"}, 400)
        if USERS.get(user) != password:
            return _json({"error": "invalid credentials"}, 401)
        return _json({"token": self.issue(user), "user": user})

    async def verify_2fa(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        await self.pause(30)
        try:
            code = str((await request.json())["code"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": "code required"}, 400)
        # The demo's "authenticator": a code derived from the user name; 000000 always fails.
        expected = str(
            int(hashlib.sha256(claims["sub"].encode()).hexdigest(), 16) % 1_000_000
        ).zfill(6)
        if code != expected:
            return _json({"verified": False}, 401)
        return _json(
            {"verified": True, "token": self.issue(claims["sub"], sid=claims["sid"], mfa=True)}
        )

    async def list_transactions(self, request: web.Request) -> web.Response:
        self.claims(request)
        await self.pause(15)
        raw = request.query.get("limit", "20")
        limit = min(int(raw), 100) if raw.isdigit() else 20
        items = list(self.transactions.values())[-limit:]
        return _json({"items": items, "total": len(self.transactions)})

    async def get_transaction(self, request: web.Request) -> web.Response:
        self.claims(request)
        await self.pause(8)
        txn = self.transactions.get(int(request.match_info["id"]))
        return _json(txn) if txn else _json({"error": "not found"}, 404)

    async def create_transaction(self, request: web.Request) -> web.Response:
        self.claims(request)
        await self.pause(25)
        try:
            body = await request.json()
            amount = float(body["amount"])
        except (ValueError, KeyError, TypeError):
            return _json({"error": "amount required"}, 400)
        txn = {
            "id": self.next_id,
            "amount": amount,
            "currency": "EUR",
            "memo": str(body.get("memo", ""))[:200],
        }
        self.transactions[self.next_id] = txn
        self.next_id += 1
        return _json(txn, 201)

    async def expenses(self, request: web.Request) -> web.Response:
        self.claims(request)
        await self.pause(12)
        return _json(
            {"items": [{"id": i, "category": "travel", "amount": 12.5 * i} for i in range(1, 16)]}
        )

    async def reports(self, request: web.Request) -> web.Response:
        self.claims(request)
        await self.pause(60)
        return _json({"report": "monthly", "rows": [[m, 1000 + m * 17] for m in range(1, 13)]})

    async def export(self, request: web.Request) -> web.Response:
        self.claims(request)
        await self.pause(120)
        rows = "\n".join(
            f"{t['id']},{t['amount']},{t['currency']}" for t in self.transactions.values()
        )
        return web.Response(text="id,amount,currency\n" + rows, content_type="text/csv")

    async def admin_users(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        await self.pause(20)
        if claims.get("role") != "admin":
            return _json({"error": "forbidden"}, 403)
        return _json({"users": sorted(USERS)})

    async def health(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})


def create_sample_upstream(
    jwt_secret: str = DEFAULT_JWT_SECRET,
    latency_scale: float = 1.0,
) -> web.Application:
    api = SampleApi(jwt_secret, latency_scale)
    app = web.Application()
    r = app.router
    r.add_post("/api/auth/login", api.login)
    r.add_post("/api/auth/2fa/verify", api.verify_2fa)
    r.add_get("/api/transactions", api.list_transactions)
    r.add_post("/api/transactions", api.create_transaction)
    r.add_get(r"/api/transactions/{id:\d+}", api.get_transaction)
    r.add_get("/api/expenses", api.expenses)
    r.add_get("/api/reports", api.reports)
    r.add_get("/api/financial/export", api.export)
    r.add_get("/api/admin/users", api.admin_users)
    r.add_get("/health", api.health)
    return app
