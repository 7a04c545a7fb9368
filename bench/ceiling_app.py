"""The ceiling: the least work a Litestar + granian endpoint can do on this machine.

GET /bytes returns pre-encoded bytes: no I/O, no encoding, no auth. The same idea as
../shared/peers/ceiling_app.py `/bytes`. The document is the CMS's own by-slug answer for
article-0500, saved by run.sh (CEILING_BODY=path); without it, a synthetic by-slug-sized
document is built at start. Run (run.sh does): granian --interface asgi --workers 1
--loop uvloop ceiling_app:app
"""

from __future__ import annotations

import os

import msgspec
from litestar import Litestar, Response, get


def _body() -> bytes:
    path = os.environ.get("CEILING_BODY")
    if path:
        with open(path, "rb") as f:
            return f.read()
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 40)[:2048]
    return msgspec.json.encode({"data": {
        "id": "01JBENCHCEILING00000000000", "type": "article", "locale": "en", "version": 1,
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "published_at": "2026-01-01T00:00:00Z",
        "fields": {"title": "Lorem ipsum dolor sit amet 0500", "slug": "article-0500", "body": words,
                   "author": {"id": "01JBENCHAUTHOR000000000000", "type": "author"}},
    }})


BODY = _body()


@get("/bytes")
async def pre_encoded() -> Response[bytes]:
    return Response(BODY, media_type="application/json")


app = Litestar([pre_encoded], debug=False)
