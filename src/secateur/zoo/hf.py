"""Hugging Face architectures built from small configs (random weights, no download)."""

from __future__ import annotations

import torch

from ..deps import require


def _classes(*names: str) -> tuple:
    """Classes from transformers (the ``hf`` extra), with a clear error when it is missing."""
    transformers = require("transformers", "Hugging Face zoo models")
    return tuple(getattr(transformers, n) for n in names)


def _ids() -> dict:
    return {"input_ids": torch.randint(0, 100, (2, 8))}


def _pixels() -> tuple:
    return (torch.randn(2, 3, 32, 32),)


def bert():
    BertConfig, BertModel = _classes("BertConfig", "BertModel")
    return BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                vocab_size=100, max_position_embeddings=32))


def gpt2():
    GPT2Config, GPT2LMHeadModel = _classes("GPT2Config", "GPT2LMHeadModel")
    return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32,
                                      bos_token_id=0, eos_token_id=0))


def llama():
    LlamaConfig, LlamaForCausalLM = _classes("LlamaConfig", "LlamaForCausalLM")
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                        max_position_embeddings=32, tie_word_embeddings=True))


def vit():
    ViTConfig, ViTModel = _classes("ViTConfig", "ViTModel")
    return ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              image_size=32, patch_size=8), add_pooling_layer=False)


def resnet():
    ResNetConfig, ResNetForImageClassification = _classes("ResNetConfig", "ResNetForImageClassification")
    return ResNetForImageClassification(ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                                     layer_type="basic", num_labels=5))


def mobilenet_v2():
    config, model = _classes("MobileNetV2Config", "MobileNetV2ForImageClassification")
    return model(config(image_size=32, depth_multiplier=0.35, num_labels=5))


def convnext():
    ConvNextConfig, ConvNextForImageClassification = _classes("ConvNextConfig", "ConvNextForImageClassification")
    return ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
                                                         num_labels=5, image_size=32))


def distilbert():
    DistilBertConfig, DistilBertModel = _classes("DistilBertConfig", "DistilBertModel")
    return DistilBertModel(DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=100,
                                            max_position_embeddings=32))


HF = {
    "hf-bert": (bert, _ids),
    "hf-gpt2": (gpt2, _ids),
    "hf-llama-gqa": (llama, _ids),
    "hf-vit": (vit, _pixels),
    "hf-resnet": (resnet, _pixels),
    "hf-mobilenet-v2": (mobilenet_v2, _pixels),
    "hf-convnext": (convnext, _pixels),
    "hf-distilbert": (distilbert, _ids),
}
