"""The benchmark tool on tiny models (a smoke test of the tool; numbers are not checked for speed)."""
from __future__ import annotations

import csv
import json

import pytest

from s3prl_plugins import bench, hub
from s3prl_plugins.upstreams.melhubert import testing


def test_bench_tiny_run(tmp_path):
    ckpt = testing.make_checkpoint("melhubert_local", tmp_path / "ckpt")["ckpt"]
    out = tmp_path / "out"
    code = bench.main(["--tiny", "--archs", "hubert_base_reference", "--checkpoint", "melhubert_local", ckpt,
                       "--devices", "cpu", "--batch", "2", "--seconds", "0.5", "--repeats", "1", "--threads", "1",
                       "-o", str(out)])
    assert code == 0
    rows = json.loads((out / "bench.json").read_text())
    assert [r["name"] for r in rows] == ["hubert_base_reference", "melhubert_local:melhubert-tiny.ckpt"]
    assert all("error" not in r for r in rows), rows
    melhubert = rows[1]
    assert melhubert["params"] == sum(p.numel() for p in hub.melhubert_local(ckpt=ckpt).parameters())
    assert melhubert["throughput_x_realtime"] == pytest.approx(1.0 / melhubert["latency_s"])
    assert melhubert["macs_per_second"] > 0 and melhubert["peak_memory_bytes"] > 0
    table = list(csv.DictReader((out / "bench.csv").open()))
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    assert "| hubert_base_reference | cpu |" in (out / "bench.md").read_text()


def test_every_architecture_has_a_loader():
    from s3prl_plugins.upstreams.common.family import family_of_entry

    for name, arch in bench.architectures().items():
        if arch is not None:
            family = family_of_entry(arch.entry)
            assert arch.entry in hub.__all__, name
            assert callable(family.resolve(arch.writer)) and callable(family.resolve(family.test_checkpoint)), name


def test_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--archs", "no_such_model"])
    assert "unknown architecture" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--archs", "none"])
