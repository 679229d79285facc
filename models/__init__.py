"""Shipped vqcodec models (one folder each: config.json, model.safetensors, MODEL_CARD.md)."""
