"""A note-aware feature model for the k-means tokenizer: Spotify's basic-pitch (Bittner et al., 2022).

basic-pitch is a small network trained to transcribe notes; its three posteriorgrams per ~11.6 ms frame
(pitch contour in thirds of a semitone, 264 bins; note activity, 88 piano keys; note onsets, 88 keys) are
concatenated into 440-d features, which :class:`~musiclm.semantic.tokenizer.KMeansTokenizer` averages down
to 25 Hz and clusters like any other backbone's. Unlike a self-supervised model's, these features are
local (a 2 s window) and say which notes sound and start, which is what the acoustic stages should be told.

The ONNX model ships inside the ``basic-pitch`` wheel (Apache-2.0) and runs on ``onnxruntime``, without
TensorFlow. A tokenizer folder stores the model file's SHA-256 instead of its weights, so loading it with
another basic-pitch release is refused instead of silently giving other tokens.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from musiclm.config import ConfigError

INSTALL = "pip install 'musiclm[notes]' && pip install --no-deps basic-pitch==0.4.0"
WINDOW = 43844  # samples a model call hears (2 s at 22.05 kHz, less one hop), fixed by the ONNX graph
HOP = 256  # samples per output frame
OVERLAP = 30  # frames two neighbouring windows share; half of them is cut from each side, as basic-pitch does
OUTPUTS = ["StatefulPartitionedCall:0", "StatefulPartitionedCall:1", "StatefulPartitionedCall:2"]
FEATURES = {"contour": 264, "note": 88, "onset": 88}  # the order of OUTPUTS


def model_path() -> Path:
    # found without importing basic_pitch, whose __init__ warns about every runtime it lacks
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or spec.origin is None:
        raise ConfigError(f"the basic-pitch backbone needs basic-pitch; install it with: {INSTALL}")
    return Path(spec.origin).parent / "saved_models" / "icassp_2022" / "nmp.onnx"


@functools.cache
def _session(path: str):
    try:
        import onnxruntime
    except ImportError as err:
        raise ConfigError(f"the basic-pitch backbone needs onnxruntime; install it with: {INSTALL}") from err
    options = onnxruntime.SessionOptions()
    # as many threads as torch is allowed, so `torch.set_num_threads` (and a nice'd job) bounds both
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class BasicPitch(nn.Module):
    """``layer_features(wav [B, T] at 22.05 kHz, 0)`` -> ``[B, round(T / 256), 440]`` posteriorgrams."""

    sample_rate = 22050
    feature_dim = sum(FEATURES.values())
    num_layers = 0  # one set of features: the tokenizer's ``layer`` is 0

    def __init__(self, sha256: str | None = None):
        super().__init__()
        self.path = model_path()
        if not self.path.is_file():
            raise ConfigError(f"basic-pitch's ONNX model {self.path} is missing; reinstall it: {INSTALL}")
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if sha256 is not None and sha256 != self.sha256:
            raise ConfigError(
                f"this tokenizer was fitted on another basic-pitch model (SHA-256 {sha256[:12]}…) than the "
                f"installed one ({self.sha256[:12]}…): install the basic-pitch release it was fitted with "
                "(0.4.0 for the tokenizers this project writes) or fit k-means again"
            )

    @classmethod
    def from_config_dict(cls, data: dict) -> BasicPitch:
        return cls(data.get("sha256"))

    def config_dict(self) -> dict:
        return {"sha256": self.sha256}

    def layer_features(self, wav: torch.Tensor, layer: int = 0) -> torch.Tensor:
        if layer != 0:
            raise ValueError(f"layer {layer} out of range: basic-pitch has one set of features (layer 0)")
        audio = wav.detach().float().cpu().numpy()
        frames = max(1, round(audio.shape[-1] / HOP))
        keep = WINDOW // HOP + 1 - OVERLAP  # frames each window contributes
        count = -(-frames // keep)
        # half an overlap of silence in front, so that the first kept frame is the audio's first
        front = OVERLAP // 2 * HOP
        back = max(0, (count - 1) * keep * HOP + WINDOW - front - audio.shape[-1])
        padded = np.pad(audio, ((0, 0), (front, back)))
        windows = np.stack([padded[:, i * keep * HOP : i * keep * HOP + WINDOW] for i in range(count)], 1)
        outputs = _session(str(self.path)).run(
            OUTPUTS, {"serving_default_input_2:0": windows.reshape(-1, WINDOW, 1)}
        )
        feats = np.concatenate([o[:, OVERLAP // 2 : OVERLAP // 2 + keep] for o in outputs], axis=-1)
        feats = feats.reshape(len(audio), -1, self.feature_dim)[:, :frames]
        return torch.from_numpy(np.ascontiguousarray(feats)).to(wav.device)
