"""Evaluation metrics that are not Keras training metrics (caption scores, retrieval ranks)."""
