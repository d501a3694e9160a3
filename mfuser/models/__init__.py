"""Model components. Each import registers its classes in ``mmseg.registry.MODELS``."""
# --- fused encoder, decode head, segmentor, text encoder, pretrained-weight loading ---
from . import backbones, heads, pretrained, segmentors, text_encoder  # noqa: F401

# --- Mamba core (selective scan users), re-exported: MVFuser, adapters, MTEnhancer ---
from .adapters import ConcatAttentionAdapter, SeparateAttentionAdapter  # noqa: F401
from .mtenhancer import MTEnhancer, MTEnhancerStack  # noqa: F401
from .mvfuser import GatedRMSNorm, MVFuser  # noqa: F401
