"""A toy world for sam-explain: synthetic scenes, a small image encoder, and SAM's prompt
encoder and mask decoder trained on them (weights shipped in the package).

  scenes      synthetic scenes with ground-truth masks (whole objects and nested parts)
  encoder     the small image encoder
  model       ToyModel and toy_model() (the shipped weights)
  sampling    prompts drawn from the ground truth
  losses      SAM's mask and IoU losses
  schedules   the training recipes (TrainConfig, SCHEDULES)
  train       the training loop
  evaluate    the figures on held-out scenes
"""

from .model import ToyModel, toy_model
from .scenes import Scene, SceneBatch, click_inside, generate_scenes, make_scene

__all__ = ["ToyModel", "toy_model", "Scene", "SceneBatch", "generate_scenes", "make_scene", "click_inside"]
