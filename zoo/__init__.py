"""Spiking ResNets of Zheng et al. (AAAI 2021), timm-registered: ``zoo.create('sresnet19_tdbn')`` or
``timm.create_model('sresnet19_tdbn')`` after ``import zoo``.

Where things live (one concept per module)::

    models        spiking_resnet.py  the Table-4 ResNets (SpikingResNet, ARCH_CFGS), timm's model contract
                  factory.py         timm registration and build (build_model_with_cfg), checkpoint fit
                  tags.py            one pretrained tag per paper result (TAGS), recipes, train commands
    resolving     api.py             create, list_models, resolve: every way of naming a model, once
                  naming.py          arch.tag, did-you-mean suggestions, stage names
    loading and   checkpoints.py     checkpoint folders (safetensors + config.json + card), save_pretrained
    publishing    model_card.py      the Hub model card (README.md) of a checkpoint folder
                  pretrained.py      tag resolution, finding and loading a checkpoint into a model
                  manifest.py        weights/manifest.json: shipped checkpoints, sha256, pinned Hub commits
                  hub.py             the Hugging Face Hub: download (pinned, verified) and publish
                  fileio.py          atomic writes, safetensors headers
    transforms    fuse.py, unfuse.py, to_nir.py  (each block owns its part: adapters.fusion, adapters.nir_export)
    errors        errors.py          the zoo's exceptions (ZooError and its kinds)
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
