"""Model components. Each import registers its classes in ``mmseg.registry.MODELS``."""
from . import backbones, heads, segmentors  # noqa: F401
# --- Mamba core (selective scan users): MVFuser, adapters, MTEnhancer ---
from .adapters import ConcatAttentionAdapter, SeparateAttentionAdapter  # noqa: F401,E402
from .mtenhancer import MTEnhancer, MTEnhancerStack  # noqa: F401,E402
from .mvfuser import GatedRMSNorm, MVFuser  # noqa: F401,E402
# --- fused encoder / text encoder ---
from . import pretrained, text_encoder  # noqa: F401,E402
# --- head / segmentor ---
