"""Accuracy over the most confident, the four-way partition, and the statistics of the gap."""
