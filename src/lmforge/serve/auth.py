"""Bearer-token check for ``API_KEY``, compared in constant time."""

from __future__ import annotations

import hmac

from fastapi import Request

from lmforge.serve.openai_errors import ApiError


def require_api_key(api_key: str | None):
    """A FastAPI dependency: nothing to check without a key; otherwise 401 unless the bearer token matches."""
    expected = api_key.encode() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "missing API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise ApiError(
                401, "incorrect API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )

    return check
