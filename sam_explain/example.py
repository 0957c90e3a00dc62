"""The old name of :mod:`sam_explain.prompts`, kept so that ``sam_explain.example.Prompts`` still imports."""

from .prompts import Prompts, example_prompts, run_decoder

__all__ = ["Prompts", "example_prompts", "run_decoder"]
