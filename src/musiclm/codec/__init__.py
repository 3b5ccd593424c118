"""Acoustic codecs: our SoundStream and adapters to pretrained HF codecs."""
