"""Data: manifests, the embedded dataset builder (scores rendered to captioned audio), training datasets."""
