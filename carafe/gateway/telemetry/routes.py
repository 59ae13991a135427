"""``GET /metrics``: Prometheus exposition of the gateway's metrics (served when
``telemetry.metrics`` is on; the app leaves the route out otherwise)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from carafe.gateway.telemetry import metrics

router = APIRouter(tags=["telemetry"])


@router.get("/metrics", include_in_schema=False)
async def get_metrics() -> Response:
    """Prometheus text format."""
    body, content_type = metrics.render()
    return Response(content=body, media_type=content_type)
