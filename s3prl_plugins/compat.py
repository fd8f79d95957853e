"""Compatibility between s3prl 0.4.18 and the installed torch/torchaudio.

Everything version-dependent lives here, so moving to a newer torchaudio means changing this
module only:

* torch >= 2.6 loads checkpoints weights-only by default. s3prl's own checkpoints (downstream
  ``dev-best.ckpt``, pre-training ``states-*.ckpt``) pickle ``argparse.Namespace`` and s3prl's
  ``optimizers`` schedule objects. :func:`allow_s3prl_checkpoints` allowlists exactly those
  classes (s3prl's own code, already imported), instead of turning weights-only off globally.
* torchaudio >= 2.9 removed ``set_audio_backend``, ``info``, ``sox_effects`` and moved ``load``
  to TorchCodec. :func:`patch_torchaudio` restores what s3prl's task code calls, on soundfile.
  On torchaudio <= 2.8 it changes nothing.
"""
from __future__ import annotations

import argparse
import sys
import types

__all__ = ["torchaudio_version", "patch_torchaudio", "allow_s3prl_checkpoints", "apply"]


def torchaudio_version() -> tuple[int, int]:
    import torchaudio

    major, minor = torchaudio.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _soundfile_load(path, frame_offset=0, num_frames=-1, normalize=True, channels_first=True, format=None, **_):
    import soundfile
    import torch

    data, rate = soundfile.read(
        str(path), start=frame_offset, frames=num_frames, dtype="float32" if normalize else "int16", always_2d=True
    )
    tensor = torch.from_numpy(data)
    return (tensor.t().contiguous() if channels_first else tensor), rate


def _soundfile_info(path, **_):
    import soundfile

    info = soundfile.info(str(path))
    return types.SimpleNamespace(
        sample_rate=info.samplerate, num_frames=info.frames, num_channels=info.channels,
        bits_per_sample=0, encoding=info.subtype,
    )


def _apply_effects_tensor(waveform, sample_rate, effects, channels_first=True):
    """The subset of sox effects s3prl's tasks use: channels, rate, gain."""
    import torchaudio.functional as AF

    wav, rate = waveform if channels_first else waveform.t(), sample_rate
    for effect in effects:
        name, *args = [str(a) for a in effect]
        if name == "channels":
            if int(args[0]) == 1:
                wav = wav.mean(dim=0, keepdim=True)
        elif name == "rate":
            new_rate = int(float(args[0]))
            wav, rate = AF.resample(wav, rate, new_rate), new_rate
        elif name == "gain":
            wav = wav * (10.0 ** (float(args[-1]) / 20.0))
        else:
            raise RuntimeError(f"sox effect {name!r} needs libsox (apt-get install libsox-dev) with torchaudio <= 2.8")
    return (wav if channels_first else wav.t()), rate


def _apply_effects_file(path, effects, normalize=True, channels_first=True, format=None):
    wav, rate = _soundfile_load(path, normalize=normalize)
    return _apply_effects_tensor(wav, rate, effects, channels_first)


def patch_torchaudio() -> bool:
    """Give torchaudio >= 2.9 the functions s3prl 0.4.18 calls; returns whether it patched."""
    import torchaudio

    if torchaudio_version() < (2, 9):
        return False
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda backend=None: None
    torchaudio.load = _soundfile_load
    torchaudio.info = _soundfile_info
    sox = types.ModuleType("torchaudio.sox_effects")
    sox.apply_effects_tensor = _apply_effects_tensor
    sox.apply_effects_file = _apply_effects_file
    sys.modules["torchaudio.sox_effects"] = sox
    torchaudio.sox_effects = sox
    return True


def allow_s3prl_checkpoints() -> None:
    """Let ``torch.load`` read s3prl's own checkpoints weights-only (torch >= 2.6)."""
    import torch

    safe: list = [argparse.Namespace]
    try:
        import s3prl.optimizers as optimizers
        import s3prl.schedulers as schedulers

        for module, alias in ((optimizers, "optimizers"), (schedulers, "schedulers")):
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == module.__name__:
                    safe.append(value)
                    # run_pretrain imports these modules top-level, so pickles name them so.
                    safe.append((value, f"{alias}.{value.__name__}"))
    except ImportError:
        pass
    torch.serialization.add_safe_globals(safe)


def apply() -> None:
    patch_torchaudio()
    allow_s3prl_checkpoints()
