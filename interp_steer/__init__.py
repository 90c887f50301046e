"""interp_steer: activation steering, identifiability and SAE interventions on TransformerLens."""

from interp_steer.generation import generate
from interp_steer.interventions import ablate, clamp, steer
from interp_steer.models import DEFAULT_MODEL, chat, load_model
from interp_steer.vectors import SteeringVector, model_fingerprint

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "SteeringVector",
    "ablate",
    "chat",
    "clamp",
    "generate",
    "load_model",
    "model_fingerprint",
    "steer",
]
