"""Detector training on COCO-format data, and a synthetic shapes dataset to prove it offline."""
