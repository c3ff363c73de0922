"""Unknown query parameters are refused like unknown JSON fields: a typo such as `limt=5` is a 400."""

from __future__ import annotations

import weakref
from typing import Any

from litestar import Request
from litestar.enums import ParamType
from litestar.handlers import BaseRouteHandler
from litestar.params import ParameterKwarg

from api.errors import BadRequest

# A route with this opt takes every other query parameter as a filter and checks them itself.
FILTERS_IN_QUERY = "rowhook.filters_in_query"
# Keyed by the handler itself, weakly: an id() would be reused by the handler of a later app (tests
# build many), which then inherited another route's parameters.
_declared: weakref.WeakKeyDictionary[BaseRouteHandler, frozenset[str]] = weakref.WeakKeyDictionary()


def declared_query_parameters(handler: BaseRouteHandler) -> frozenset[str]:
    if (names := _declared.get(handler)) is None:
        # Dependencies (conn, account, settings) are parsed like query parameters too: they are not ones.
        dependencies = set(handler.resolve_dependencies())
        names = frozenset(
            field.kwarg_definition.query or name
            for name, field in handler.parsed_fn_signature.parameters.items()
            if isinstance(field.kwarg_definition, ParameterKwarg)
            and field.kwarg_definition.param_type is ParamType.QUERY
            and name not in dependencies
        )
        _declared[handler] = names
    return names


async def refuse_unknown_query_parameters(request: Request[Any, Any, Any]) -> None:
    """A before_request hook: 400 naming the first query parameter the route does not declare."""
    if request.route_handler.opt.get(FILTERS_IN_QUERY):
        return
    allowed = declared_query_parameters(request.route_handler)
    for name in request.query_params:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(
                f"unknown query parameter (this route takes: {known})", field=name or "(empty name)"
            )
