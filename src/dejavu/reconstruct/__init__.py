"""Reconstruction: a diffusion decoder of SSL embeddings that draws what a model infers from a crop."""
