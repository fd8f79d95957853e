"""K-means targets of MelHuBERT (and any HuBERT-style) pre-training.

* stage 1: clusters of the normalised 40-bin fbank frames (10 ms);
* stage 2: clusters of one layer's hidden features of a stage-1 model (any file
  ``melhubert_local`` reads, e.g. the ``.ckpt`` or ``.weights.pt`` of a pre-training export).

The clustering is scikit-learn's ``MiniBatchKMeans`` with the settings of fairseq's
``examples/hubert/simple_kmeans/learn_kmeans.py`` (k-means++ init, ``max_iter`` 100,
``batch_size`` 10000, ``tol`` 0, ``max_no_improvement`` 100, ``n_init`` 20,
``reassignment_ratio`` 0) on the frames of a random ``percent`` of the utterances. Labels are
the nearest centroid (squared Euclidean distance, computed with torch on ``--device``).

Files:

* ``<name>.npy`` the centroids ``[K, D]`` float32, ``<name>.json`` how they were made (feature
  source, layer, checkpoint, statistics, sizes, scikit-learn settings); the ``labels`` step
  reads the feature source from it, so both stages apply the features they were fitted on;
* label files ``<labels>/<key>.npy`` (int16 below 32768 clusters, else int32), one cluster
  id per **10 ms** fbank frame whatever the model's frame period: a 20 ms stage-1 model's
  labels are repeated (``[l0, l0, l1, l1, ...]``, cut to the fbank frame count), and 20 ms
  training takes every other one again (the official ``label[::2]``);
* ``<labels>/labels.csv``: the training list ``file_path,label_path,length`` (fbank ``.npy``,
  label ``.npy``, 10 ms frames) that ``data.sets`` of the recipe reads.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..upstreams.common.files import save_npy_atomic
from .data import DataError, read_table
from .data import progress as _progress

__all__ = ["FEATURE_LIST_COLUMNS", "FbankFrames", "LayerFeatures", "read_feature_list", "feature_source",
           "fit_kmeans", "write_labels", "default_stats", "nearest_centroid", "FAIRSEQ_KMEANS"]

#: the feature list written by the ``fbank`` step
FEATURE_LIST_COLUMNS = ("key", "file_path", "length")

#: fairseq simple_kmeans' MiniBatchKMeans settings (learn_kmeans.py defaults)
FAIRSEQ_KMEANS = dict(init="k-means++", max_iter=100, batch_size=10000, tol=0.0, max_no_improvement=100, n_init=20,
                      reassignment_ratio=0.0)


def read_feature_list(csv_path: str | os.PathLike) -> list[tuple[str, Path, int]]:
    """(key, fbank .npy path, 10 ms frames) of every row of the ``fbank`` step's list."""
    csv_path = Path(csv_path)
    rows = read_table(csv_path)
    missing = [c for c in FEATURE_LIST_COLUMNS if c not in rows[0]]
    if missing:
        raise DataError(f"{csv_path} lacks the column(s) {missing}; it must be the fbank.csv written by "
                        "`python -m s3prl_plugins.pretrain.prepare fbank`")
    base = csv_path.resolve().parent
    out = []
    for row in rows:
        path = Path(row["file_path"])
        out.append((row["key"], path if path.is_absolute() else base / path, int(row["length"])))
    return out


def _load_fbank(path: Path) -> np.ndarray:
    try:
        fbank = np.load(path)
    except FileNotFoundError:
        raise DataError(f"{path} (listed in the feature list) does not exist; re-run the fbank step") from None
    if fbank.ndim != 2 or fbank.shape[1] != 40:
        raise DataError(f"{path} has shape {fbank.shape}; expected [T, 40] raw fbank")
    return fbank


class FbankFrames:
    """Stage-1 features: the normalised 10 ms fbank frames ``[T, 40]``."""

    frame_period_ms = 10

    def __init__(self, stats: str):
        from .melhubert import resolve_stats

        self.stats = resolve_stats(stats)
        self.stats_choice = _absolute(stats)

    def __call__(self, fbank: np.ndarray) -> np.ndarray:
        from .melhubert import normalise

        return normalise(fbank, self.stats.mean, self.stats.std).numpy()

    def describe(self) -> dict:
        return {"source": "fbank", "stats": self.stats_choice}


class LayerFeatures:
    """Stage-2 features: hidden state ``layer`` of a MelHuBERT model (0 = the projected input,
    k = the output of transformer layer k, the upstream's ``hidden_states`` numbering) on the
    normalised (and, for 20 ms models, frame-paired) fbank, in eval mode."""

    def __init__(self, checkpoint: str | os.PathLike, layer: int, stats: str, device: str = "cpu"):
        from ..upstreams.melhubert.formats import read_melhubert_checkpoint
        from ..upstreams.melhubert.model import MelHuBERTModel
        from .melhubert import resolve_stats

        imported = read_melhubert_checkpoint(checkpoint)
        config = imported.config
        if not 0 <= layer <= config.encoder_layers:
            raise DataError(f"--layer {layer}: {checkpoint} has {config.encoder_layers} transformer layers; use 0 "
                            f"(projected input) .. {config.encoder_layers}")
        self.model = MelHuBERTModel(config)
        missing, unexpected = self.model.load_state_dict(imported.state_dict, strict=False)
        missing = [k for k in missing if not k.startswith("final_proj.")]
        if missing or unexpected:
            raise DataError(f"{checkpoint}: weights do not fit the stored config (missing {missing[:4]}, "
                            f"unexpected {unexpected[:4]})")
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        # only the layers up to the chosen one are needed
        del self.model.encoder.layers[max(layer, 1):]
        self.layer = layer
        self.checkpoint = str(Path(checkpoint).resolve())
        self.frame_period_ms = config.frame_period_ms
        self.stats = resolve_stats(stats)
        self.stats_choice = _absolute(stats)

    @torch.inference_mode()
    def __call__(self, fbank: np.ndarray) -> np.ndarray:
        from .melhubert import normalise, stack_frame_pairs

        features = normalise(fbank, self.stats.mean, self.stats.std)
        if self.frame_period_ms == 20:
            features = stack_frame_pairs(features)
        hidden = self.model(features[None].to(self.device), None)[self.layer][0]
        return hidden.float().cpu().numpy()

    def describe(self) -> dict:
        return {"source": "layer", "checkpoint": self.checkpoint, "layer": self.layer, "stats": self.stats_choice,
                "frame_period_ms": self.frame_period_ms}


def default_stats(features_csv: str | os.PathLike, checkpoint: str | None = None) -> str:
    """The statistics a stage-1 export was trained with (``mean-std.npy`` beside it), else
    those of the fbank step (``mean-std.npy`` beside the feature list)."""
    if checkpoint is not None:
        beside = Path(checkpoint).resolve().parent / "mean-std.npy"
        if beside.is_file():
            return str(beside)
    return str(Path(features_csv).resolve().parent / "mean-std.npy")


def _absolute(stats: str) -> str:
    """An existing file as an absolute path (the label step may run elsewhere); names as given."""
    path = Path(stats).expanduser()
    return str(path.resolve()) if path.is_file() else str(stats)


def feature_source(*, stats: str, checkpoint: str | None = None, layer: int | None = None, device: str = "cpu"):
    """Stage 1 (no checkpoint) or stage 2 (checkpoint + layer) features."""
    if checkpoint is None:
        if layer is not None:
            raise DataError("--layer needs --checkpoint (the stage-1 model whose layer is clustered)")
        return FbankFrames(stats)
    if layer is None:
        raise DataError("--checkpoint needs --layer (which hidden state to cluster; fairseq's HuBERT Base "
                        "second iteration uses layer 6)")
    return LayerFeatures(checkpoint, layer, stats, device)


def _source_from_meta(meta: dict, device: str):
    if meta.get("source") == "layer":
        return LayerFeatures(meta["checkpoint"], int(meta["layer"]), meta["stats"], device)
    return FbankFrames(meta["stats"])


def fit_kmeans(features_csv: str | os.PathLike, output: str | os.PathLike, *, stats: str | None = None,
               checkpoint: str | None = None, layer: int | None = None, clusters: int = 512, percent: float = 0.1,
               seed: int = 0, device: str = "cpu", progress: bool = True, **kmeans_options) -> Path:
    """Fit ``MiniBatchKMeans`` on the frames of a random ``percent`` of the utterances (all when
    ``percent`` <= 0 or >= 1) and write ``<output>.npy`` (centroids) + ``<output>.json``.
    Re-running with the centroids present does nothing."""
    from sklearn import __version__ as sklearn_version
    from sklearn.cluster import MiniBatchKMeans

    output = Path(output)
    if output.suffix != ".npy":
        output = output.with_name(output.name + ".npy")
    meta_path = output.with_suffix(".json")
    if output.exists() and meta_path.exists():
        return output
    stats = stats or default_stats(features_csv, checkpoint)
    source = feature_source(stats=stats, checkpoint=checkpoint, layer=layer, device=device)
    rows = read_feature_list(features_csv)
    rng = np.random.default_rng(seed)
    if 0 < percent < 1:
        count = int(np.ceil(len(rows) * percent))
        chosen = sorted(rng.choice(len(rows), count, replace=False).tolist())
    else:
        chosen = list(range(len(rows)))
    frames = [source(_load_fbank(rows[i][1])) for i in _progress(chosen, len(chosen), "k-means features", progress)]
    data = np.concatenate(frames).astype(np.float32, copy=False)
    if len(data) < clusters:
        raise DataError(f"{len(data)} frames for {clusters} clusters; raise --percent or lower --clusters")
    options = {**FAIRSEQ_KMEANS, **kmeans_options}
    print(f"[kmeans] fitting MiniBatchKMeans({clusters} clusters, {options['n_init']} initialisations, up to "
          f"{options['max_iter']} passes) on {len(data)} frames x {data.shape[1]} dims from {len(chosen)} utterances "
          f"({source.describe()['source']}, normalised with {source.stats_choice})", flush=True)
    # verbose=0: scikit-learn would print one line per mini-batch (millions on LibriSpeech)
    km = MiniBatchKMeans(n_clusters=clusters, compute_labels=False, init_size=None, random_state=seed, verbose=0,
                         **options)
    km.fit(data)
    inertia = float(-km.score(data) / len(data))
    centroids = km.cluster_centers_.astype(np.float32)
    output.parent.mkdir(parents=True, exist_ok=True)
    _save_npy(output, centroids)
    meta = {**source.describe(), "clusters": clusters, "dim": int(data.shape[1]), "frames": int(len(data)),
            "utterances": len(chosen), "percent": percent, "seed": seed,
            "features_csv": str(Path(features_csv).resolve()),
            "inertia_per_frame": inertia, "kmeans": f"sklearn {sklearn_version} MiniBatchKMeans", "options": options}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"[kmeans] mean squared distance to the nearest centroid: {inertia:.4f}; wrote {output}", flush=True)
    return output


def nearest_centroid(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of every row (fairseq ApplyKmeans' distance expansion)."""
    distance = (features.pow(2).sum(1, keepdim=True) - 2 * features @ centroids.T
                + centroids.pow(2).sum(1)[None, :])
    return distance.argmin(dim=1)


def _save_npy(path: Path, array: np.ndarray) -> None:
    save_npy_atomic(path, array)


def write_labels(features_csv: str | os.PathLike, kmeans: str | os.PathLike, output: str | os.PathLike, *,
                 device: str = "cpu", progress: bool = True, csv_name: str = "labels.csv") -> Path:
    """Label every utterance of ``features_csv`` with the centroids ``kmeans`` (features made as
    its ``.json`` says) into ``<output>/<key>.npy``; existing label files are kept. Writes the
    training list ``<output>/labels.csv``."""
    kmeans = Path(kmeans)
    meta_path = kmeans.with_suffix(".json")
    if not kmeans.is_file() or not meta_path.is_file():
        raise DataError(f"{kmeans} (+ {meta_path.name}) not found; fit it with "
                        "`python -m s3prl_plugins.pretrain.prepare kmeans`")
    meta = json.loads(meta_path.read_text())
    centroids = torch.from_numpy(np.load(kmeans)).float().to(device)
    dtype = np.int16 if len(centroids) <= np.iinfo(np.int16).max else np.int32
    source = None
    output = Path(output)
    rows = read_feature_list(features_csv)
    out_rows = []
    for key, fbank_path, length in _progress(rows, len(rows), "labels", progress):
        target = output / f"{key}.npy"
        if not target.exists():
            if source is None:
                source = _source_from_meta(meta, device)
            fbank = _load_fbank(fbank_path)
            features = torch.from_numpy(source(fbank)).to(device)
            if features.shape[1] != centroids.shape[1]:
                raise DataError(f"features of {fbank_path} have {features.shape[1]} dims, the centroids "
                                f"{centroids.shape[1]}")
            labels = nearest_centroid(features, centroids).cpu().numpy()
            if source.frame_period_ms == 20:  # keep label files at 10 ms
                labels = np.repeat(labels, 2)[: len(fbank)]
            if len(labels) != len(fbank):
                raise DataError(f"{fbank_path}: {len(labels)} labels for {len(fbank)} frames")
            _save_npy(target, labels.astype(dtype))
        out_rows.append((str(fbank_path.resolve()), Path(f"{key}.npy").as_posix(), length))
    csv_path = output / csv_name
    output.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_path", "label_path", "length"])
        writer.writerows(out_rows)
    (output / "labels.json").write_text(json.dumps({**meta, "kmeans_file": str(kmeans.resolve()),
                                                    "label_rate_ms": 10}, indent=2) + "\n")
    return csv_path
