"""Growth adapters for stock Hugging Face ``transformers`` models (the optional extra ``growres[transformers]``).

A transformer layer is a residual block with two sub-branches, attention and MLP, and every layer keeps the
hidden size, so each model is one stage of time steps and has no transitions. Growing one adds a copy of
every layer (:func:`growres.grow`): right after it (``copy``, ``identity``, ``copy-unscaled``) or, with
``stack``, after all the layers in the same order (layers 0..L-1, 0..L-1); scaling a layer's branch scales the
last linear of each sub-branch (attention output projection, MLP down projection), weights and biases, which
scales what the branch adds to the residual stream exactly.

A family is data (:class:`TransformersFamily`): the ``config.model_type`` values it covers, where the layers
sit under the base model, and each sub-branch's last linear. After growth, :func:`refresh_transformers_model`
keeps the records a user would otherwise get wrong: ``config.num_hidden_layers`` (GPT-2's ``n_layer``), the
per-layer ``layer_idx`` the KV cache is indexed by, and the per-layer ``config.layer_types`` (read back from
the layers themselves, so they stay in step with any placement of the copies).

Post-norm encoders (BERT, RoBERTa) compute ``LayerNorm(x + branch)``: the branch sits inside a LayerNorm, so
scaling it is exact but a zero branch is not an identity. A new layer grown with ``strategy="identity"``
computes ``LN_out(LN_attn(x))``, which equals ``x`` only while the LayerNorms feeding it have uniform weights
and biases (as at initialisation); with trained LayerNorms the function changes.

This module imports nothing from ``transformers``: a model can only be a transformers model once
``transformers`` is imported, so ``import growres`` stays light and works without the extra.
"""
import sys
from dataclasses import dataclass

import torch.nn as nn

from .errors import GrowresError
from .growth import GrowthAdapter, register_adapter, scale_layer

__all__ = ["FAMILIES", "TransformersFamily", "refresh_transformers_model", "transformers_layers"]


@dataclass(frozen=True)
class TransformersFamily:
    """Where one family of transformers models keeps its layers and residual branches."""
    name: str  # the adapter's name
    model_types: tuple[str, ...]  # config.model_type values of the family
    layers: str  # dotted path of the layers' ModuleList under model.base_model
    branch_ends: tuple[str, ...]  # per layer, the last linear of each residual sub-branch (attention, MLP)
    description: str  # for `growres list --families`
    examples: tuple[str, ...]  # transformers classes of the family


FAMILIES = (
    TransformersFamily("transformers-gpt2", ("gpt2",), "h", ("attn.c_proj", "mlp.c_proj"),
                       "Hugging Face transformers GPT-2 (growres[transformers])", ("GPT2LMHeadModel", "GPT2Model")),
    TransformersFamily("transformers-llama", ("llama", "mistral", "qwen2", "qwen3"), "layers",
                       ("self_attn.o_proj", "mlp.down_proj"),
                       "Hugging Face transformers Llama, Mistral, Qwen2, Qwen3 (growres[transformers])",
                       ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")),
    TransformersFamily("transformers-bert", ("bert", "roberta"), "encoder.layer",
                       ("attention.output.dense", "output.dense"),
                       "Hugging Face transformers BERT, RoBERTa (post-norm: identity growth exact only at uniform "
                       "LayerNorms; growres[transformers])", ("BertModel", "RobertaForMaskedLM")),
    TransformersFamily("transformers-vit", ("vit",), "layers", ("attention.o_proj", "mlp.fc2"),
                       "Hugging Face transformers ViT (growres[transformers])", ("ViTForImageClassification",)),
)


def _is_transformers_model(model: nn.Module) -> bool:
    transformers = sys.modules.get("transformers")  # a transformers model exists only once it is imported
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def transformers_layers(family: TransformersFamily, model: nn.Module) -> nn.ModuleList:
    """The model's ModuleList of layers (under a task head's base model)."""
    return model.base_model.get_submodule(family.layers)


def _check_growable(model: nn.Module) -> None:
    """Refuse the configurations whose layers cannot be copied into a deeper model of the same function."""
    config = model.config
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        raise GrowresError(
            "This GPT-2 scales each layer's attention by 1/(layer index + 1) (scale_attn_by_inverse_layer_idx), "
            "so growth, which renumbers the layers, would change what every kept layer computes: growres "
            "grows GPT-2 models without it."
        )
    if getattr(config, "add_cross_attention", False):
        raise GrowresError("growres grows self-attention transformers: this model has cross-attention "
                           "(add_cross_attention), a third residual branch its adapter does not scale.")


def _matches(family: TransformersFamily, model: nn.Module) -> bool:
    if not _is_transformers_model(model) or model.config.model_type not in family.model_types:
        return False
    try:
        layers = transformers_layers(family, model)
        for layer in layers:
            for path in family.branch_ends:
                layer.get_submodule(path)
    except AttributeError:
        return False  # another layout than the one this adapter knows (another transformers version)
    # the model is of the family: refuse here, before anything (a GrowthScheduler is built) touches it
    _check_growable(model)
    return True


def _scale_branch(family: TransformersFamily, layer: nn.Module, factor: float) -> None:
    for path in family.branch_ends:
        scale_layer(layer.get_submodule(path), factor)


def _layer_type(layer: nn.Module) -> str:
    """The attention type a layer was built with (Qwen2/Qwen3 keep it on their attention module)."""
    types = {module.layer_type for module in layer.modules() if hasattr(module, "layer_type")}
    assert len(types) == 1, f"a layer with attention types {types}"
    return types.pop()


def refresh_transformers_model(family: TransformersFamily, model: nn.Module) -> None:
    """Make the model's per-layer records describe its current layers."""
    layers = transformers_layers(family, model)
    for idx, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # the KV cache slot this layer's attention reads and writes
                module.layer_idx = idx
    config = model.config
    config.num_hidden_layers = len(layers)  # GPT-2 maps it to n_layer
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [_layer_type(layer) for layer in layers]


def _adapter(family: TransformersFamily) -> GrowthAdapter:
    return GrowthAdapter(
        name=family.name,
        matches=lambda model: _matches(family, model),
        stages=lambda model: [transformers_layers(family, model)],  # every layer keeps the hidden size
        is_transition=lambda layer: False,
        scale_branch=lambda layer, factor: _scale_branch(family, layer, factor),
        refresh=lambda model: refresh_transformers_model(family, model),
        # the layers take more than x (masks, positions), so the analyses, which call a block on x alone, refuse
        shortcut=None,
        description=family.description,
        examples=family.examples,
    )


for _family in FAMILIES:
    register_adapter(_adapter(_family))
