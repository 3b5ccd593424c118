"""Evaluation suite: FAD, KLD, MCC, prompt adherence, melody accuracy, memorization, one report."""
