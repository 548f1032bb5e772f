"""dejavu: audit self-supervised vision models for deja vu memorization.

Re-implements the two-model test of Meehan et al., "Do SSL Models Have Deja Vu?
A Case of Unintended Memorization in Self-supervised Learning" (NeurIPS 2023).
"""

__version__ = "0.1.0"
