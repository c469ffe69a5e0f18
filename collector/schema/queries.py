"""Example SELECTs over the per-minute aggregates, for analytics to copy or run via store.query.

Each takes `{start:DateTime}` / `{end:DateTime}` (UTC, end exclusive, whole minutes count) and
returns, per group: requests, errors, rate_per_s (over the whole window), error_ratio, mean_ms
and p50_ms / p90_ms / p99_ms merged from t-digest states (approximate; exact for few distinct
values).
"""

from __future__ import annotations

__all__ = ["EDGES_OVER_WINDOW", "EDGE_ROUTES_OVER_WINDOW", "SERVICES_OVER_WINDOW"]

_STATS = """
    sum(count) AS requests,
    sum(error_count) AS errors,
    requests / greatest(dateDiff('second', {start:DateTime}, {end:DateTime}), 1) AS rate_per_s,
    errors / requests AS error_ratio,
    sum(duration_sum_ns) / requests / 1e6 AS mean_ms,
    quantilesTDigestMerge(0.5, 0.9, 0.99)(duration_quantiles_ns) AS quantiles_ns,
    quantiles_ns[1] / 1e6 AS p50_ms,
    quantiles_ns[2] / 1e6 AS p90_ms,
    quantiles_ns[3] / 1e6 AS p99_ms"""

# The service map: one row per caller -> callee edge in the window.
EDGES_OVER_WINDOW = f"""
SELECT caller, callee,{_STATS}
FROM meshlens_edges_1m
WHERE minute >= {{start:DateTime}} AND minute < {{end:DateTime}}
GROUP BY caller, callee
ORDER BY caller, callee
"""

# One edge broken down by route and status code (drill-down from the map).
EDGE_ROUTES_OVER_WINDOW = f"""
SELECT route, status_code,{_STATS}
FROM meshlens_edges_1m
WHERE minute >= {{start:DateTime}} AND minute < {{end:DateTime}}
  AND caller = {{caller:String}} AND callee = {{callee:String}}
GROUP BY route, status_code
ORDER BY route, status_code
"""

# RED per service and route, from the server side (SERVER spans).
SERVICES_OVER_WINDOW = f"""
SELECT service, route,{_STATS}
FROM meshlens_services_1m
WHERE minute >= {{start:DateTime}} AND minute < {{end:DateTime}}
GROUP BY service, route
ORDER BY service, route
"""
