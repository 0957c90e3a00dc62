"""Shape traces: ``with trace_shapes(model) as trace: model(...)``, then look at ``trace``.

See docs/tracing.md."""

from .render import SCHEMA, SCHEMA_VERSION
from .trace import ShapeTrace, TensorInfo, TraceRow, Value, trace_shapes
from .prompt import trace_prompt

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ShapeTrace", "TensorInfo", "TraceRow", "Value", "trace_prompt", "trace_shapes"]
