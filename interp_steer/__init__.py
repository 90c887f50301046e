"""interp_steer: activation steering, identifiability and SAE interventions on TransformerLens."""

__version__ = "0.1.0"


from interp_steer.generation import generate
from interp_steer.interventions import ablate, clamp, steer
from interp_steer.methods import build_vector
from interp_steer.models import DEFAULT_MODEL, chat, load_model
from interp_steer.vectors import SteeringVector, model_fingerprint

__all__ = [
    "DEFAULT_MODEL",
    "SteeringVector",
    "ablate",
    "build_vector",
    "chat",
    "clamp",
    "generate",
    "load_model",
    "model_fingerprint",
    "steer",
]
