"""Speech synthesis with espeak-ng: several voices stand for several speakers."""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000

#: espeak-ng voice + variant combinations; each plays one "speaker".
VOICES = (
    "en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-us+m4", "en-gb-x-rp+f1",
    "en-029+m2", "en-gb-scotland+f3", "en-us+m7", "en-gb+f5", "en-us+klatt", "en-gb-x-gbclan+m6",
)


class SynthesisError(RuntimeError):
    pass


def require_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SynthesisError(
            "espeak-ng is not installed; install it with `apt-get install espeak-ng` "
            "(the README's install command does this)."
        )
    return path


@dataclass(frozen=True)
class Speaker:
    voice: str
    speed: int  # words per minute
    pitch: int  # 0-99


def speaker(index: int, rng: np.random.Generator) -> Speaker:
    return Speaker(VOICES[index % len(VOICES)], int(rng.integers(140, 185)), int(rng.integers(30, 70)))


def _resample(wave: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return wave
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(wave), rate, SAMPLE_RATE).numpy()


def speak(text: str, who: Speaker) -> np.ndarray:
    """``text`` spoken by ``who`` as float32 samples at 16 kHz (deterministic)."""
    import soundfile

    command = [require_espeak(), "-v", who.voice, "-s", str(who.speed), "-p", str(who.pitch), "--stdout", text]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SynthesisError(f"espeak-ng failed for voice {who.voice}: {result.stderr.decode(errors='replace')}")
    wave, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    wave = _resample(wave, rate)
    # espeak pads generously with silence: keep 50 ms around the speech.
    voiced = np.flatnonzero(np.abs(wave) > 1e-3)
    if voiced.size:
        margin = SAMPLE_RATE // 20
        wave = wave[max(0, voiced[0] - margin): voiced[-1] + margin]
    return wave.astype(np.float32)


def noise(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise (white, pink, brown) or mains hum, normalised to a modest level."""
    n = int(seconds * SAMPLE_RATE)
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        wave = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.28)) / k for k in (1, 2, 3))
        wave = wave + 0.05 * rng.standard_normal(n)
    else:
        white = rng.standard_normal(n)
        if kind == "white":
            wave = white
        else:
            spectrum = np.fft.rfft(white)
            freqs = np.fft.rfftfreq(n)
            freqs[0] = freqs[1]
            spectrum /= freqs ** (0.5 if kind == "pink" else 1.0)
            wave = np.fft.irfft(spectrum, n)
    wave = wave / (np.abs(wave).max() + 1e-9) * 0.3
    return wave.astype(np.float32)


def add_noise(wave: np.ndarray, rng: np.random.Generator, snr_db: float = 30.0) -> np.ndarray:
    """A little white noise so that no two clips are bit-identical silences."""
    power = float(np.mean(wave ** 2)) + 1e-9
    scale = np.sqrt(power / (10 ** (snr_db / 10)))
    return (wave + scale * rng.standard_normal(wave.shape)).astype(np.float32)
