"""MuLan text/music embeddings and their tokens, the melody embedder, and a CLAP adapter."""
