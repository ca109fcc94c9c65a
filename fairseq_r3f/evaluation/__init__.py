"""Evaluation helpers: ROUGE for summarization (rouge.py)."""
