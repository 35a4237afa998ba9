"""Model registry: classifiers and segmenters (2D and 3D) and attention blocks.

Importing this package registers every model.
"""

# importing the model modules registers them
from meddx.models import densenet, efficientnet, mobilenet, resnet, segmenters, small_cnn  # noqa: F401
from meddx.models.attention import CBAM, SE, make_attention
from meddx.models.registry import (count_parameters, create_model, list_models, model_options, model_task,
                                   register_model)

__all__ = [
    "CBAM",
    "SE",
    "count_parameters",
    "create_model",
    "list_models",
    "make_attention",
    "model_options",
    "model_task",
    "register_model",
]
