"""musiclm: a trainable implementation of Google's MusicLM (Agostinelli et al., 2023).

The package mirrors the architecture: ``data`` (datasets), ``codec`` (SoundStream, acoustic tokens),
``semantic`` (w2v-BERT + k-means, semantic tokens), ``mulan`` (text/music embeddings and their tokens),
``stages`` (the three token Transformers), ``pipeline`` (text in, music out), ``training`` (the one
training engine), ``evaluation`` and ``cli``.
"""

__version__ = "0.1.0"
