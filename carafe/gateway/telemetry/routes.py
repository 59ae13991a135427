"""``GET /metrics``: Prometheus exposition of the gateway's metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from carafe.gateway.telemetry import metrics

router = APIRouter(tags=["telemetry"])


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response:
    """Prometheus text format; 404 when ``telemetry.metrics`` is off."""
    state = getattr(request.app.state, "carafe", None)
    if state is not None and not state.config.telemetry.metrics:
        return Response(status_code=404, content=b"metrics are disabled (telemetry.metrics: false)\n")
    body, content_type = metrics.render()
    return Response(content=body, media_type=content_type)
