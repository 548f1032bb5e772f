"""Conventional evaluation of an encoder: kNN accuracy (and, later, the linear probe)."""
