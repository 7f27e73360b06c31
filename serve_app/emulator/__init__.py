"""Provider emulator: one loopback HTTP server speaking OpenAI chat completions, Anthropic messages
and Gemini generateContent (streaming included), with per-model latency profiles and fault injection.

It is product code: ``fusion-router emulator`` runs it alone, ``fusion-router run`` starts it when
provider keys are absent, and the tests and benchmarks drive it.
"""

from serve_app.emulator.app import create_app
from serve_app.emulator.faults import FaultBook, FaultSpec
from serve_app.emulator.server import EmulatorServer

__all__ = ["EmulatorServer", "FaultBook", "FaultSpec", "create_app"]
