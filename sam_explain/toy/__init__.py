"""A toy world for sam-explain: synthetic scenes, a small image encoder, and SAM's prompt
encoder and mask decoder trained on them (weights shipped in the package).

  scenes      synthetic scenes with ground-truth masks (whole objects and nested parts), mask_iou
  encoder     the small image encoder
  model       ToyModel and toy_model() (the shipped weights)
  sampling    prompts drawn from the ground truth
  losses      SAM's mask and IoU losses
  schedules   the training recipes (TrainConfig, SCHEDULES)
  train       the training loop
  evaluate    the figures on held-out scenes

The toy SAM 2 (SAM 2.1's decoder side, trained on the same scenes; docs/toy_sam2.md):

  sam2_encoder    the image encoder with SAM 2's stride-4 and stride-8 levels
  sam2_model      ToySam2Model and toy_sam2_model() (the shipped weights)
  sam2_train      SAM 2's recipe (its schedules: schedules.SAM2_SCHEDULES)
  sam2_evaluate   its figures on held-out scenes
"""

from .model import ToyModel, toy_model
from .sam2_model import ToySam2Model, toy_sam2_model
from .scenes import Scene, SceneBatch, click_inside, generate_scenes, make_scene, mask_iou

__all__ = ["ToyModel", "toy_model", "ToySam2Model", "toy_sam2_model", "Scene", "SceneBatch", "generate_scenes", "make_scene", "click_inside",
           "mask_iou"]
