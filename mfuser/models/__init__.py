"""Model components. Each import registers its classes in ``mmseg.registry.MODELS``."""
from . import backbones, heads, segmentors  # noqa: F401
# --- Mamba core (selective scan users): MVFuser, adapters, MTEnhancer ---
# --- fused encoder / text encoder ---
from . import pretrained, text_encoder  # noqa: F401,E402
# --- head / segmentor ---
