"""Shape traces: ``with trace_shapes(model) as trace: model(...)``, then look at ``trace``.

  records   what a row holds (TraceRow, TensorInfo, ...) and its check against the shape contract
  views     ShapeTrace: the rows, filtered and collapsed
  render    the rows as text, Markdown, HTML and JSON
  tracer    trace_shapes: the hooks that record the rows
  prompt    trace_prompt: one call from a described prompt to its trace

See docs/tracing.md."""

from .prompt import trace_prompt
from .records import TensorInfo, TraceRow, Value
from .render import SCHEMA, SCHEMA_VERSION
from .tracer import trace_shapes
from .views import ShapeTrace

__all__ = ["SCHEMA", "SCHEMA_VERSION", "ShapeTrace", "TensorInfo", "TraceRow", "Value", "trace_prompt", "trace_shapes"]
