"""Checkpoint reading (official pickles under torch >= 2.6), resolving, and family detection."""
from __future__ import annotations

import argparse
import http.server
import io
import sys
import threading
import types
import zipfile
from collections import OrderedDict

import pytest
import torch

from s3prl_plugins.upstreams.common import checkpoint as ck


def _foreign_classes():
    """Classes pickled under module names that are not importable at load time."""
    modules = {}
    # "trainer_optimizers", not s3prl's "optimizers": s3prl's own classes are allowlisted as real ones
    # wherever the installed compat block ran (any process that imported s3prl)
    for name in ("trainer_optimizers", "pytorch_lightning", "pytorch_lightning.utilities",
                 "pytorch_lightning.utilities.parsing"):
        modules[name] = sys.modules.setdefault(name, types.ModuleType(name))

    class WarmupLinearSchedule:
        def __init__(self, warmup):
            self.warmup = warmup

    class AttributeDict(dict):
        pass

    class LayerList(list):
        pass

    WarmupLinearSchedule.__module__ = "trainer_optimizers"
    WarmupLinearSchedule.__qualname__ = "WarmupLinearSchedule"
    AttributeDict.__module__ = "pytorch_lightning.utilities.parsing"
    AttributeDict.__qualname__ = "AttributeDict"
    modules["trainer_optimizers"].WarmupLinearSchedule = WarmupLinearSchedule
    modules["pytorch_lightning.utilities.parsing"].AttributeDict = AttributeDict
    LayerList.__module__, LayerList.__qualname__ = "trainer_optimizers", "LayerList"
    modules["trainer_optimizers"].LayerList = LayerList
    return WarmupLinearSchedule, AttributeDict, LayerList, list(modules)


@pytest.fixture
def official_like(tmp_path):
    schedule_cls, attrdict_cls, list_cls, names = _foreign_classes()
    obj = {
        "model": OrderedDict(weight=torch.arange(4.0)),
        "args": argparse.Namespace(lr=1e-4, model="m2d_vit_base"),
        "Optimizer": {"schedule": schedule_cls(5)},
        "hyper_parameters": attrdict_cls(cfg={"distiller": {"encoder_layers": 12}}),
        "layers": list_cls([1, 2]),
        "stats": __import__("numpy").array([1.0, 2.0]),
    }
    paths = {"zip": tmp_path / "new.pt", "legacy": tmp_path / "legacy.pt"}
    torch.save(obj, paths["zip"])
    torch.save(obj, paths["legacy"], _use_new_zipfile_serialization=False)
    for name in names:  # as on a user's machine: those modules do not exist
        sys.modules.pop(name, None)
    return paths


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_official_pickles_load_weights_only(official_like, layout):
    obj = ck.load_checkpoint(official_like[layout], family="test")
    assert torch.equal(obj["model"]["weight"], torch.arange(4.0))
    assert obj["args"].model == "m2d_vit_base" and isinstance(obj["args"], argparse.Namespace)
    stand_in = obj["Optimizer"]["schedule"]
    assert isinstance(stand_in, ck.StandIn) and stand_in.warmup == 5
    assert obj["hyper_parameters"]["cfg"]["distiller"]["encoder_layers"] == 12
    # a foreign dict subclass comes back as an exact dict on every torch (2.10 fills only those)
    assert type(obj["hyper_parameters"]) is dict
    assert type(obj["layers"]) is list and obj["layers"] == [1, 2]
    assert obj["stats"].tolist() == [1.0, 2.0]
    assert "trainer_optimizers" not in sys.modules, "loading must not import or create foreign modules"


def test_stand_ins_never_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("side effect",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    out = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, out
    try:
        obj = ck.load_checkpoint(tmp_path / "evil.pt")
    finally:
        sys.stdout = sys_stdout
    assert out.getvalue() == "" and isinstance(obj["x"], ck.StandIn)


def test_bad_files_get_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ck.MissingCheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "missing.pt", family="m2d")
    for path, words in ((truncated, "truncated"), (empty, "empty"), (text, "truncated"), (tmp_path, "folder")):
        with pytest.raises(ck.CheckpointError, match=words) as caught:
            ck.load_checkpoint(path, family="m2d")
        # never torch's advice to run the file's code
        assert "weights_only" not in str(caught.value)
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ck.CheckpointError, match="not a PyTorch checkpoint") as caught:
        ck.load_checkpoint(random_bytes, family="m2d")
    assert "weights_only" not in str(caught.value)


def test_safetensors(tmp_path):
    from safetensors.torch import save_file

    save_file({"encoder.w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    assert torch.equal(ck.load_checkpoint(tmp_path / "model.safetensors")["encoder.w"], torch.ones(2))


FAMILY_KEYS = {
    "m2d": {"model": {"patch_embed.proj.weight": 0, "blocks.0.attn.qkv.weight": 0, "pos_embed": 0}},
    "dasheng": {"model": {"time_pos_embed": 0, "freq_pos_embed": 0, "blocks.0.attn.qkv.weight": 0}},
    "melhubert": {"Upstream_Config": {"melhubert": {}}, "model": {"encoder.pos_conv.0.weight_g": 0}},
    "armhubert": {"state_dict": {"student_model.proj_head.0.lin_proj.weight": 0, "teacher_model.model.mask_emb": 0}},
    "starhubert": {"state_dict": {"student_model.encoder.layers.0.self_attn.q_proj.weight": 0,
                                  "student_model.feature_extractor.conv_layers.0.0.weight": 0}},
    "hubert": {"model": {"feature_extractor.conv_layers.0.0.weight": 0, "label_embs_concat": 0,
                         "encoder.layers.0.self_attn.q_proj.weight": 0}},
    "distilhubert": {"Distiller": {}, "Config": {}},
}


@pytest.mark.parametrize("family", sorted(FAMILY_KEYS))
def test_detect_family(family):
    assert ck.detect_family(FAMILY_KEYS[family]) == family


def test_check_family_names_the_right_entry():
    with pytest.raises(ck.CheckpointError, match="dasheng.*dasheng_local"):
        ck.check_family(FAMILY_KEYS["dasheng"], "m2d", "x.pt", entry="m2d_local")
    ck.check_family(FAMILY_KEYS["m2d"], "m2d", "x.pt")
    ck.check_family({"unrelated": 1}, "m2d", "x.pt")  # unknown layouts are left to the family reader


class _Server:
    """A loopback HTTP server with a few files, to test downloads without the network."""

    def __init__(self, files: dict[str, tuple[bytes, str]]):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                if path not in files:
                    self.send_error(404)
                    return
                body, kind = files[path]
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_download_cache_and_zip(monkeypatch, tmp_path):
    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    archive = _zip_bytes({"m2d_vit_base-80x608p16x16-221006/checkpoint-300.pth": b"weights"})
    files = {"/release/m2d.zip": (archive, "application/zip"), "/file.pt": (b"abc", "application/octet-stream"),
             "/quota": (b"<html>sign in</html>", "text/html")}
    with _Server(files) as server:
        url = server.url + "/file.pt"
        path = ck.resolve_checkpoint(url)
        assert path == ck.cached_download_path(url) and path.read_bytes() == b"abc"
        assert path.parent == tmp_path / "cache" / "download"
        folder = ck.resolve_checkpoint(server.url + "/release/m2d.zip")
        assert (folder / "m2d_vit_base-80x608p16x16-221006" / "checkpoint-300.pth").read_bytes() == b"weights"
        with pytest.raises(ck.CheckpointError, match=r"web page.*m2d_local"):
            ck.resolve_checkpoint(server.url + "/quota", local_entry="m2d_local")
        assert not ck.cached_download_path(server.url + "/quota").exists()
    # cached: no server needed any more
    assert ck.resolve_checkpoint(url).read_bytes() == b"abc"


def test_refresh_replaces_the_file_and_a_failed_refresh_keeps_it(monkeypatch, tmp_path):
    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    files = {"/file.pt": (b"old", "application/octet-stream")}
    with _Server(files) as server:
        url = server.url + "/file.pt"
        path = ck.resolve_checkpoint(url)
        files["/file.pt"] = (b"new", "application/octet-stream")
        assert ck.resolve_checkpoint(url).read_bytes() == b"old"  # cached
        assert ck.resolve_checkpoint(url, refresh=True).read_bytes() == b"new"
        files["/file.pt"] = (b"<html>quota</html>", "text/html")
        with pytest.raises(ck.CheckpointError, match="web page"):
            ck.resolve_checkpoint(url, refresh=True)
        del files["/file.pt"]
        with pytest.raises(ck.CheckpointError, match="404"):
            ck.resolve_checkpoint(url, refresh=True)
    assert path.read_bytes() == b"new" and sorted(p.name for p in path.parent.iterdir() if "file.pt" in p.name) == [
        path.name, path.name + ".lock"]


def test_concurrent_downloads_of_one_file_fetch_it_once(monkeypatch, tmp_path):
    """Two processes of a distributed run asking for the same release at the same moment: the file
    lock makes the second wait and find the file, so the server sees one request."""
    import multiprocessing
    import time

    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path / "cache"))
    body = b"x" * (4 << 20)
    with _Server({"/big.pt": (body, "application/octet-stream")}) as server:
        requests = []
        handler = server.httpd.RequestHandlerClass
        original = handler.do_GET

        def slow_counting(self):  # slow enough that both processes are waiting at once
            requests.append(self.path)
            time.sleep(0.5)
            original(self)

        handler.do_GET = slow_counting
        url = server.url + "/big.pt"
        context = multiprocessing.get_context("fork")
        barrier, results = context.Barrier(2), context.Queue()

        def fetch():
            barrier.wait()
            results.put(str(ck.resolve_checkpoint(url)))

        workers = [context.Process(target=fetch) for _ in range(2)]
        for worker in workers:
            worker.start()
        paths = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(30)
            assert worker.exitcode == 0
        # the server thread lives in this process, so it counts both workers' requests
        assert paths[0] == paths[1] == str(ck.cached_download_path(url))
        assert ck.cached_download_path(url).read_bytes() == body
        assert requests == ["/big.pt"]


def test_unreachable_download_names_the_file_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("S3PRL_PLUGINS_CACHE_DIR", str(tmp_path))
    with pytest.raises(ck.CheckpointError) as info:
        ck.resolve_checkpoint("gdrive:FILEID123", local_entry="melhubert_local", filename="melhubert.ckpt")
    message = str(info.value)
    assert "FILEID123" in message and "melhubert_local" in message and "melhubert.ckpt" in message


def test_resolve_local_paths(tmp_path):
    with pytest.raises(ck.MissingCheckpointError, match="-u m2d_local -k"):
        ck.resolve_checkpoint(None, local_entry="m2d_local")
    with pytest.raises(ck.MissingCheckpointError, match="not found"):
        ck.resolve_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "a.pt").write_bytes(b"x")
    assert ck.resolve_checkpoint(str(tmp_path / "a.pt")) == tmp_path / "a.pt"
