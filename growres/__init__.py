"""growres: multi-level residual networks (Chang et al., ICLR 2018), grown during training.

``import growres`` registers the paper's ResNets and Wide ResNets in timm (``growres_*``) and the growth
adapters for growres, timm ResNet, ResNetV2, ConvNeXt and VisionTransformer models, and for stock Hugging Face
``transformers`` models (GPT-2, Llama/Mistral/Qwen2/Qwen3, BERT/RoBERTa, ViT; install ``growres[transformers]``);
``growres list --families`` lists them.
"""

__version__ = "0.1.0"

# registers the growres_* models in timm, and the transformers families' adapters (imports no transformers)
from . import multilevel_resnet, transformers_adapters  # noqa: F401
from .allocator import keep_freed_cpu_memory
from .errors import GrowresError
from .growth import (
    STRATEGIES,
    GrowthAdapter,
    GrowthStrategy,
    get_adapter,
    get_strategy,
    grow,
    interpolate,
    register_adapter,
    registered_adapters,
    stage_layers,
)
from .scheduler import GrowthPlan, GrowthRecord, GrowthScheduler, cyclic_cosine_lr, rebuild_optimizer, regroup_optimizer
from .time_saved import forward_flops, theoretical_time_saved

__all__ = [
    "STRATEGIES",
    "GrowresError",
    "GrowthAdapter",
    "GrowthPlan",
    "GrowthRecord",
    "GrowthScheduler",
    "GrowthStrategy",
    "__version__",
    "cyclic_cosine_lr",
    "forward_flops",
    "get_adapter",
    "get_strategy",
    "grow",
    "grow_sharded",
    "interpolate",
    "keep_freed_cpu_memory",
    "push_to_hub",
    "rebuild_optimizer",
    "regroup_optimizer",
    "register_adapter",
    "registered_adapters",
    "stage_layers",
    "theoretical_time_saved",
]


def __getattr__(name):
    # the Hub client is imported only by those who push, FSDP2's internals only by those who shard
    if name == "push_to_hub":
        from .hub import push_to_hub
        return push_to_hub
    if name == "grow_sharded":  # FSDP2: torch >= 2.6 with torch.distributed
        from .sharding import grow_sharded
        return grow_sharded
    raise AttributeError(f"module 'growres' has no attribute {name!r}")
