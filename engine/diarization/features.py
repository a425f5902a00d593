"""Kaldi-compatible log-mel filterbank features for the CAM++ speaker embedding model.

CAM++ (3D-Speaker) was trained on 80-bin Kaldi fbank features computed from waveforms scaled
to [-1, 1], with each utterance's mean subtracted per bin. This module reproduces that front
end in plain numpy so the run time needs no torch/torchaudio. The settings are Kaldi's defaults
as used by 3D-Speaker: 25 ms povey window, 10 ms shift, pre-emphasis 0.97, DC removal, no
dither, ``snip_edges`` framing, 512-point FFT, power spectrum, mel bins from 20 Hz to Nyquist,
natural log floored at float32 epsilon.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.messages import SAMPLE_RATE

FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512  # next power of two above the frame length (Kaldi's round_to_power_of_two)
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPH = 0.97
_EPS = float(np.finfo(np.float32).eps)  # Kaldi floors log arguments at float epsilon


def num_frames(num_samples: int) -> int:
    """Number of fbank frames Kaldi's ``snip_edges=True`` framing yields for a signal."""
    if num_samples < FRAME_LENGTH:
        return 0
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def _mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(freq / 700.0)


@lru_cache(maxsize=4)
def _povey_window(length: int = FRAME_LENGTH) -> np.ndarray:
    """Kaldi's 'povey' window: a symmetric Hann window raised to the power 0.85."""
    n = np.arange(length, dtype=np.float64)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (length - 1))
    return (hann**0.85).astype(np.float32)


@lru_cache(maxsize=4)
def mel_filterbank(
    num_bins: int = NUM_MEL_BINS,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    low_freq: float = LOW_FREQ,
) -> np.ndarray:
    """Triangular filters in the mel domain, shape (n_fft // 2 + 1, num_bins).

    Kaldi builds the triangles on the mel value of each FFT bin's frequency (not on linearly
    interpolated Hz edges) and leaves the Nyquist bin out; its row here is therefore zero.
    """
    high_freq = sample_rate / 2.0
    mel_low, mel_high = _mel(np.array(low_freq)), _mel(np.array(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * np.arange(num_bins + 2, dtype=np.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fft_mel = _mel(np.arange(n_fft // 2, dtype=np.float64) * sample_rate / n_fft)[None, :]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    weights = np.maximum(0.0, np.minimum(up, down))  # (num_bins, n_fft // 2)
    bank = np.zeros((n_fft // 2 + 1, num_bins), dtype=np.float32)
    bank[: n_fft // 2] = weights.T
    return bank


def fbank(waveform: np.ndarray) -> np.ndarray:
    """Log-mel fbank of a 16 kHz mono signal in [-1, 1]; shape (num_frames, 80), float32.

    No mean normalisation here: callers normalise over the frames they actually feed CAM++.
    """
    wav = np.ascontiguousarray(waveform, dtype=np.float32)
    n = num_frames(wav.shape[0])
    if n == 0:
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(
        wav,
        shape=(n, FRAME_LENGTH),
        strides=(FRAME_SHIFT * wav.strides[0], wav.strides[0]),
        writeable=False,
    )
    frames = frames - frames.mean(axis=1, keepdims=True)  # remove DC (makes a copy)
    # Pre-emphasis; Kaldi treats the sample before the first one as the first one itself.
    frames[:, 1:] -= PREEMPH * frames[:, :-1]
    frames[:, 0] *= 1.0 - PREEMPH
    frames *= _povey_window()
    spectrum = np.fft.rfft(frames, n=N_FFT, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power.astype(np.float32, copy=False) @ mel_filterbank()
    return np.log(np.maximum(mel, _EPS))


def normalize(features: np.ndarray) -> np.ndarray:
    """Subtract the per-bin mean over frames, as 3D-Speaker does for each utterance."""
    if features.shape[0] == 0:
        return features
    return features - features.mean(axis=0, keepdims=True)
