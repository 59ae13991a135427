"""Guardrails on input and output: checks behind one protocol, named policies,
and a streaming-aware output guard.

The gateway builds one :class:`GuardPipeline` with :meth:`GuardPipeline.from_config`
and calls :meth:`~GuardPipeline.check_input` per request and
:meth:`~GuardPipeline.output_stream` per answer.
"""

from carafe.guards.config import CheckSettings, GuardsConfig, PolicyConfig
from carafe.guards.errors import GuardError, UnknownPolicy
from carafe.guards.pipeline import GuardPipeline, InputResult
from carafe.guards.stream import OutputStream, Release
from carafe.guards.verdict import GuardVerdict

__all__ = [
    "CheckSettings", "GuardError", "GuardPipeline", "GuardVerdict", "GuardsConfig", "InputResult",
    "OutputStream", "PolicyConfig", "Release", "UnknownPolicy",
]
