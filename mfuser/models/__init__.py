"""Model components. Each import registers its classes in ``mmseg.registry.MODELS``."""
# --- fused encoder / text encoder ---
from . import backbones, heads, pretrained, segmentors, text_encoder  # noqa: F401  # noqa: F401,E402

# --- Mamba core (selective scan users): MVFuser, adapters, MTEnhancer ---
from .adapters import ConcatAttentionAdapter, SeparateAttentionAdapter  # noqa: F401,E402
from .mtenhancer import MTEnhancer, MTEnhancerStack  # noqa: F401,E402
from .mvfuser import GatedRMSNorm, MVFuser  # noqa: F401,E402
# --- head / segmentor ---
