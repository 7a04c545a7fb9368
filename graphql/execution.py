"""One GraphQL request, from its text to the answer's bytes: persisted query, parse (bounded),
shape limits, validation, cost, execution, errors in the GraphQL format.

Parsed and validated documents are cached per schema version (LRU, bounded in entries; documents
over 100 KB never get here). Errors a client caused carry `extensions.code`; anything else is
logged and answered as INTERNAL_SERVER_ERROR without details: never a stack trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLSyntaxError,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OperationType,
    execute,
    parse,
    specified_rules,
    validate,
)

from cms.app.credentials.schemas import Credential
from cms.app.delivery.documents import IncludeLimit
from cms.app.problems import ProblemError

from . import limits
from .executor import Executor, Unsupported
from .persisted import PersistedQueries, hash_of, not_found, requested_hash
from .resolvers import Context, user_error
from .schema import Built

log = logging.getLogger("cms.graphql")

DOCUMENTS_CACHED = 500
_encode = msgspec.json.Encoder().encode


@dataclass
class Request:
    query: str | None
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    extensions: dict[str, Any] | None = None


@dataclass
class Answer:
    body: bytes
    ok: bool  # no error at all: worth caching
    tags: set[str] = field(default_factory=set)


@dataclass
class _Parsed:
    document: DocumentNode | None
    errors: list[GraphQLError]


class Documents:
    """Parsed and validated documents by (schema version, introspection allowed, sha256 of the text)."""

    def __init__(self, introspection: bool) -> None:
        self.introspection = introspection
        self._cache: OrderedDict[tuple[str, str], _Parsed] = OrderedDict()
        self.rules = list(specified_rules) if introspection else [*specified_rules, NoSchemaIntrospectionCustomRule]

    def get(self, built: Built, query: str) -> _Parsed:
        key = (built.version, hashlib.sha256(query.encode()).hexdigest())
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        parsed = self._parse(built, query)
        self._cache[key] = parsed
        while len(self._cache) > DOCUMENTS_CACHED:
            self._cache.popitem(last=False)
        return parsed

    def _parse(self, built: Built, query: str) -> _Parsed:
        try:
            document = parse(query, max_tokens=limits.MAX_TOKENS)
        except GraphQLSyntaxError as exc:
            code = "QUERY_TOO_COMPLEX" if "more than" in exc.message and "tokens" in exc.message else "GRAPHQL_PARSE_FAILED"
            return _Parsed(None, [GraphQLError(exc.message, source=exc.source, positions=exc.positions,
                                               extensions={"code": code})])
        problem = limits.check_shape(document)
        if problem is not None:
            return _Parsed(None, [problem])
        errors = validate(built.schema, document, self.rules, max_errors=20)
        for error in errors:
            error.extensions = {**(error.extensions or {}), "code": "GRAPHQL_VALIDATION_FAILED"}
        return _Parsed(None if errors else document, list(errors))


async def run(
    request: Request, built: Built, documents: Documents, persisted: PersistedQueries, context: Context,
    *, only_queries: bool = True,
) -> Answer:
    try:
        return await _run(request, built, documents, persisted, context, only_queries)
    except GraphQLError as error:
        return _answer(None, [error], context)


async def _run(request: Request, built: Built, documents: Documents, persisted: PersistedQueries,
               context: Context, only_queries: bool) -> Answer:
    digest = requested_hash(request.extensions)
    query = request.query
    if digest is not None:
        if query is None:
            query = await persisted.get(digest)
            if query is None:
                raise not_found()
        elif hash_of(query) != digest:
            raise GraphQLError("the query's sha256 is not extensions.persistedQuery.sha256Hash",
                               extensions={"code": "PERSISTED_QUERY_HASH_MISMATCH"})
    if not query:
        raise GraphQLError("no query: send `query` (or a persisted query's hash)", extensions={"code": "BAD_REQUEST"})
    parsed = documents.get(built, query)
    if parsed.document is None:
        return _answer(None, parsed.errors, context)
    document = parsed.document
    if digest is not None and request.query is not None:
        await persisted.put(digest, query)  # registered only once it parsed and validated
    operation = _operation(document, request.operation_name)
    if only_queries and operation is not None and operation.operation != OperationType.QUERY:
        raise GraphQLError("only queries are served here", extensions={"code": "BAD_REQUEST"})
    try:
        spent = limits.cost(built.schema, document, request.operation_name, request.variables)
    except Exception:  # a variable of the wrong shape: execution reports it properly below
        spent = 0
    if spent > limits.MAX_COST:
        raise limits.too_complex(f"the query costs {spent}; at most {limits.MAX_COST}", cost=spent)
    try:
        data = await Executor(built.schema, document, request.operation_name, request.variables, context).run()
        return _answer(data, [], context, executed=True)
    except Unsupported:
        pass  # graphql-core's executor answers instead (its errors, introspection, …)
    try:
        result = execute(built.schema, document, context_value=context, variable_values=request.variables,
                         operation_name=request.operation_name)
        if not isinstance(result, ExecutionResult):
            result = await result
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the request itself is cancelled (the client went away)
        log.error("GraphQL execution ended by a stray cancellation")
        raise GraphQLError("internal error", extensions={"code": "INTERNAL_SERVER_ERROR"}) from None
    return _answer(result.data, list(result.errors or ()), context, executed=True)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (name is None or (
            definition.name is not None and definition.name.value == name
        )):
            return definition
    return None


def _answer(data: Any, errors: list[GraphQLError], context: Context, *, executed: bool = False) -> Answer:
    """The response: `data` is there once execution started (null if a non-null root field failed),
    absent for a request that never ran (parse, validation, limits)."""
    errors = [*errors, *context.errors]
    out: dict[str, Any] = {}
    if errors:
        out["errors"] = [_format(error) for error in errors]
    if executed:
        out["data"] = data
    return Answer(_encode(out), ok=not errors, tags=context.tags)


def _format(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    if isinstance(original, GraphQLError):  # raised inside a resolver (TooLarge): its own code
        error = GraphQLError(original.message, error.nodes, error.source, error.positions, error.path,
                             extensions=original.extensions)
    elif isinstance(original, ProblemError):
        error = GraphQLError(user_error(original).message, error.nodes, error.source, error.positions,
                             error.path, extensions=user_error(original).extensions)
    elif original is not None and not isinstance(original, GraphQLError):
        if isinstance(original, asyncpg.QueryCanceledError):
            message, code = "the query took too long", "TIMEOUT"
        else:
            log.error("GraphQL resolver failed at %s", error.path, exc_info=original)
            message, code = "internal error", "INTERNAL_SERVER_ERROR"
        error = GraphQLError(message, error.nodes, error.source, error.positions, error.path,
                             extensions={"code": code})
    formatted = error.formatted
    extensions = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", "BAD_USER_INPUT")
    formatted["extensions"] = extensions
    return dict(formatted)


def new_context(built: Built, registry: Any, credential: Credential, pool: Any, reader: Any,
                limit: IncludeLimit | None = None) -> Context:
    return Context(built=built, registry=registry, credential=credential, pool=pool, reader=reader,
                   limit=limit or IncludeLimit())
