"""Which weights of the encoder move, and how far: the levers against forgetting and the memory levers.

Freezing the token embeddings or all but the top layers, LoRA adapters (merged back before saving),
WiSE-FT interpolation with the base, dropout for the run only, gradient checkpointing and regional
compilation. Each acts on a sentence-transformers model in place."""

from __future__ import annotations

import torch


def enable_gradient_checkpointing(model) -> None:
    model[0].auto_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointing_enabled(model) -> bool:
    return bool(getattr(model[0].auto_model, "is_gradient_checkpointing", False))


def compile_layers(model) -> int:
    """torch.compile applied per transformer layer (regional compilation): every layer has the
    same code, so one compiled graph serves all and compile time stays short. Returns the count."""
    blocks = getattr(getattr(model[0].auto_model, "encoder", None), "layer", None)
    if blocks is None:
        raise ValueError(f"training.compile_layers: {type(model[0].auto_model).__name__} has no encoder.layer list")
    for block in blocks:
        block.compile(dynamic=True)
    return len(blocks)


DROPOUT_CONFIG_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "hidden_dropout")


def set_dropout(model, probability: float) -> dict[str, float]:
    """Every dropout of the encoder, including attention dropout, to `probability`, for this run.
    Returns the model config's own rates, which `restore_dropout_config` puts back before saving:
    dropout is a training setting, and a checkpoint saved with 0 would silently fine-tune without
    it later."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = probability
    transformer = model[0].auto_model
    original = {name: getattr(transformer.config, name) for name in DROPOUT_CONFIG_FIELDS if hasattr(transformer.config, name)}
    for name in original:
        setattr(transformer.config, name, probability)  # some attention implementations read it at call time
    for module in transformer.modules():  # attention layers that read the rate at call time (sdpa)
        if hasattr(module, "dropout_prob"):
            module.dropout_prob = probability
    return original


def restore_dropout_config(model, original: dict[str, float]) -> None:
    for name, value in original.items():
        setattr(model[0].auto_model.config, name, value)


def train_only_top_layers(model, layers: int) -> int:
    """Freezes the embeddings and every transformer layer but the top `layers`; returns how many
    parameters stay trainable. Frozen bottom layers need no backward pass at all."""
    transformer = model[0].auto_model
    blocks = getattr(getattr(transformer, "encoder", None), "layer", None)
    if blocks is None:
        raise ValueError(f"training.trainable_top_layers: {type(transformer).__name__} has no encoder.layer list to choose from")
    if not 0 < layers <= len(blocks):
        raise ValueError(f"training.trainable_top_layers must be in 1..{len(blocks)}, got {layers}")
    for parameter in transformer.parameters():
        parameter.requires_grad_(False)
    for block in list(blocks)[len(blocks) - layers:]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_token_embeddings(model) -> int:
    """Stops the word-embedding matrix from training; returns how many parameters it holds."""
    embeddings = model[0].auto_model.get_input_embeddings()
    embeddings.weight.requires_grad_(False)
    return embeddings.weight.numel()


def interpolate_weights(model, base_state: dict[str, torch.Tensor], base_weight: float) -> None:
    """WiSE-FT (Wortsman et al. 2022): moves every floating-point weight `base_weight` of the way
    back to the base model, which keeps much of the fine-tuning gain while restoring robustness."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in base_state and tensor.is_floating_point():
                tensor.mul_(1.0 - base_weight).add_(base_state[name].to(tensor.device, tensor.dtype), alpha=base_weight)


def apply_lora(model, options: dict) -> int:
    """Wraps the encoder in LoRA adapters (peft); only the adapters train. Returns their size."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(options.get("r", 16)), lora_alpha=int(options.get("alpha", 32)), lora_dropout=float(options.get("dropout", 0.0)),
                        target_modules=list(options.get("target_modules", ["query", "key", "value", "dense"])), bias="none")
    model[0].model = get_peft_model(model[0].model, config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model) -> None:
    """The adapters merged into the weights: the checkpoint is a plain model again."""
    if hasattr(model[0].model, "merge_and_unload"):
        model[0].model = model[0].model.merge_and_unload()
