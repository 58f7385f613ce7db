"""Spiking ResNets of Zheng et al. (AAAI 2021), timm-registered: ``zoo.create('sresnet19_tdbn')`` or
``timm.create_model('sresnet19_tdbn')`` after ``import zoo``.

README.md maps where each concept lives (one place for the layout of adapters/, zoo/ and eval/).
"""
from .api import create, list_models, list_pretrained
from .checkpoints import save_pretrained
from .fuse import fuse
from .unfuse import unfuse
from .errors import CheckpointError, PretrainedUnavailableError, UnknownModelError, UnknownTagError, ZooError
from .spiking_resnet import ARCH_CFGS, SpikingResNet
from .tags import TAGS

__all__ = ["create", "fuse", "unfuse", "save_pretrained", "list_models", "list_pretrained", "SpikingResNet", "ARCH_CFGS",
           "TAGS", "ZooError", "UnknownModelError", "UnknownTagError", "PretrainedUnavailableError", "CheckpointError"]
