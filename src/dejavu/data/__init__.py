"""Datasets, the A/B/X/T split, periphery crops and SSL augmentation."""
