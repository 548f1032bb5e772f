"""Backbones, projector heads and the encoder that embeds at a named layer."""
