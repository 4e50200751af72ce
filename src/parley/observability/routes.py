"""The route template of a request, e.g. ``/v1/goals/{goal_id}``, never the raw path.

Starlette puts the matched route in ``scope["route"]``, but that route's own path can
lack the prefixes it was included or mounted under (FastAPI 0.16x keeps included
routers as declared; a mount only adds ``root_path``). So the full template of every
route is worked out once, by walking the route tree, and looked up by route identity
per request: no loop over the routes on the hot path.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute, Host, Mount
from starlette.types import ASGIApp, Scope

UNMATCHED = "<unmatched>"


_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")

Candidates = list[tuple[re.Pattern[str], str]]


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the paths a template stands for (``{x:path}`` spans slashes)."""
    parts, last = [], 0
    for match in _PARAM.finditer(template):
        parts.append(re.escape(template[last : match.start()]))
        parts.append(".*" if match.group(2) == "path" else "[^/]+")
        last = match.end()
    parts.append(re.escape(template[last:]))
    return re.compile("^" + "".join(parts) + "$")


def _children(routes: Iterable[BaseRoute]) -> Iterator[tuple[BaseRoute, str]]:
    """Each route with its template relative to the router that holds it.

    FastAPI 0.16x keeps included routers, with their prefixes, beside plain routes;
    ``iter_route_contexts`` flattens them (and passes Starlette routes through).
    """
    for context in iter_route_contexts(list(routes)):
        yield context.original_route, context.path_format or ""


def walk_templates(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[object, str]]:
    """Every route in the tree with its full template.

    A mounted app without routes of its own (static files, a plain ASGI app) is keyed
    by the app itself: Starlette leaves it in ``scope["endpoint"]``, not in "route".
    """
    for route, template in _children(routes):
        if isinstance(route, Mount):
            # A mount's template is "<its path>/{path}": the prefix is what precedes that.
            mount_prefix = (prefix + template).removesuffix("/{path}").rstrip("/")
            if route.routes:
                yield from walk_templates(route.routes, mount_prefix)
            else:
                yield route.app, mount_prefix + "/{path}"
        elif isinstance(route, Host):
            yield from walk_templates(route.routes, prefix)
        else:
            yield route, prefix + template


def _routes_of(app: Any) -> list[BaseRoute]:
    # Walk through middleware and wrappers down to the app that has routes.
    for _ in range(64):
        routes = getattr(app, "routes", None)
        if routes is not None:
            return list(routes)
        app = getattr(app, "app", None)
        if app is None:
            break
    return []


class RouteTemplates:
    """Maps the matched route of a scope to its full template."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._table: dict[int, Candidates] = {}
        self._rebuilt_for: set[int] = set()
        self._lock = threading.Lock()
        self._built = False

    def _build(self) -> None:
        table: dict[int, Candidates] = {}
        for route, template in walk_templates(_routes_of(self._app)):
            candidates = table.setdefault(id(route), [])
            if all(existing != template for _, existing in candidates):
                candidates.append((template_regex(template), template))
        self._table = table
        self._built = True

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return self._mounted_app_template(scope)
        candidates = self._table.get(id(route))
        if candidates is None:
            candidates = self._candidates_for(route)
        if len(candidates) == 1:
            return candidates[0][1]
        # One route object under several prefixes (a router included twice): the path decides.
        path = scope.get("path", "")
        for pattern, template in candidates:
            if pattern.match(path):
                return template
        return candidates[0][1]

    def _mounted_app_template(self, scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        if not self._built:
            with self._lock:
                self._build()
        candidates = self._table.get(id(endpoint))
        return candidates[0][1] if candidates else UNMATCHED

    def _candidates_for(self, route: BaseRoute) -> Candidates:
        key = id(route)
        with self._lock:
            if not self._built or key not in self._rebuilt_for:
                # First request, or a route added since the last walk: walk again, once.
                self._rebuilt_for.add(key)
                self._build()
            candidates = self._table.get(key)
            if candidates is None:
                # Not in the tree at all: its own template is still code-defined, so bounded.
                template = getattr(route, "path_format", None) or UNMATCHED
                candidates = [(template_regex(template), template)]
                self._table[key] = candidates
            return candidates
