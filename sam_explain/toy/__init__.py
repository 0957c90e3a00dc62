"""A toy world for sam-explain: synthetic scenes, a small image encoder, and SAM's prompt
encoder and mask decoder trained on them (weights shipped in the package)."""

from .model import ToyModel, toy_model
from .scenes import Scene, SceneBatch, click_inside, generate_scenes, make_scene

__all__ = ["ToyModel", "toy_model", "Scene", "SceneBatch", "generate_scenes", "make_scene", "click_inside"]
