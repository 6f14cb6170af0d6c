"""course_lib.data.datasets: registry, cached download (resume, checksum, no network), unpacking.

Every download here goes to a loopback HTTP server that the test starts (127.0.0.1, a thread,
with Range support) and serves small archives of generated PNGs; the real URLs are never used.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data import datasets
from course_lib.data.datasets import (
    DATASETS,
    Archive,
    ChecksumError,
    DatasetSpec,
    DownloadError,
    UnverifiedDownloadWarning,
    dataset_env_var,
    dataset_path,
    download,
    download_file,
    list_images,
    load_dataset_images,
)

# ---------------------------------------------------------------------------------------------
# a loopback server and small archives
# ---------------------------------------------------------------------------------------------


class LoopbackServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 with optional Range support and cuts."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, object]] = []
        self.cut_next = 0  # the next this-many responses stop halfway and close the connection
        self.honour_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_GET(self):  # noqa: N802 (the name http.server calls)
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append({"path": name, "range": rng})
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.honour_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_next > 0:
                    server.cut_next -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv.thread.is_alive()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Cache in tmp_path, no COURSE_DATA_* variables from outside, no pauses between retries."""
    for var in [v for v in os.environ if v.startswith("COURSE_DATA_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_sleep", lambda seconds: None)
    return tmp_path / "cache"


def closed_port_url(name: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def png_bytes(seed: int, size=(12, 16)) -> tuple[bytes, np.ndarray]:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def make_archive(kind: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buf, mode={"tar": "w", "tar.gz": "w:gz"}[kind]) as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tiny_members(n: int = 3, prefix: str = "tiny") -> tuple[dict[str, bytes], list[np.ndarray]]:
    """A small data set: HR images 1..n (natural order 1, 2, ..., 10), LR x2 images, a readme."""
    members, pixels = {}, []
    for i in range(1, n + 1):
        data, array = png_bytes(i)
        members[f"{prefix}/HR/img_{i}.png"] = data
        members[f"{prefix}/LR_x2/img_{i}.png"] = png_bytes(100 + i, size=(6, 8))[0]
        pixels.append(array)
    members[f"{prefix}/readme.txt"] = b"a tiny data set for tests"
    return members, pixels


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(monkeypatch, name: str, archive: Archive, **kwargs) -> DatasetSpec:
    spec = DatasetSpec(name=name, archive=archive, home=kwargs.pop("home", "tiny"),
                       parts=kwargs.pop("parts", {"hr": "HR", "lr_x2": "LR_x2"}), **kwargs)
    monkeypatch.setitem(DATASETS, name, spec)
    return spec


# ---------------------------------------------------------------------------------------------
# fresh download, unpacking, cache hit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, filename", [("tar.gz", "tiny.tar.gz"), ("zip", "tiny.zip"),
                                            ("tar", "tiny.tar")])
def test_fresh_download_unpacks_and_loads(server, monkeypatch, isolated, kind, filename):
    members, pixels = tiny_members(n=3)
    blob = make_archive(kind, members)
    server.files[filename] = blob
    register(monkeypatch, "tiny", Archive(url=server.url(filename), sha256=sha256(blob)), n_images=3)

    with pytest.raises(FileNotFoundError, match="download=False"):
        dataset_path("tiny")  # by default nothing is fetched: code that runs offline never needs the network
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_dataset_images("tiny")
    assert server.requests == []
    folder = dataset_path("tiny", download=True, quiet=True)
    assert folder == isolated / "tiny" / "tiny" / "HR"  # <cache>/<archive name>/<home>/<hr>
    assert [p.name for p in list_images(folder)] == ["img_1.png", "img_2.png", "img_3.png"]
    assert not (isolated / "downloads" / filename).exists()  # deleted once unpacked
    assert not list((isolated / "downloads").glob("*.part"))
    assert len(server.requests) == 1 and server.requests[0]["range"] is None

    images = load_dataset_images("tiny")
    assert len(images) == 3
    for img, array in zip(images, pixels):
        assert img.dtype == torch.float32 and img.shape == (3, 12, 16)
        expected = torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1)
        assert torch.equal(img, expected)
    assert dataset_path("tiny", part="lr_x2").name == "LR_x2"


def test_cache_hit_makes_no_request(server, monkeypatch, isolated):
    members, _ = tiny_members()
    blob = make_archive("tar.gz", members)
    server.files["tiny.tar.gz"] = blob
    register(monkeypatch, "tiny", Archive(url=server.url("tiny.tar.gz"), sha256=sha256(blob)))

    first = dataset_path("tiny", download=True, quiet=True)
    assert len(server.requests) == 1
    mtimes = {p: p.stat().st_mtime_ns for p in list_images(first)}
    assert dataset_path("tiny") == first
    assert download("tiny") == first.parent
    assert dataset_path("tiny", download=False) == first
    assert len(load_dataset_images("Tiny", max_images=2)) == 2  # names are case-insensitive
    assert len(server.requests) == 1  # no second request
    assert {p: p.stat().st_mtime_ns for p in list_images(first)} == mtimes  # nothing rewritten


def test_keep_archive_and_a_file_placed_by_hand(server, monkeypatch, isolated):
    members, _ = tiny_members()
    blob = make_archive("zip", members)
    archive = Archive(url=closed_port_url("tiny.zip"), sha256=sha256(blob))  # unreachable
    register(monkeypatch, "tiny", archive)
    by_hand = isolated / "downloads" / "tiny.zip"
    by_hand.parent.mkdir(parents=True)
    by_hand.write_bytes(blob)

    home = download("tiny", keep_archive=True, quiet=True)  # verified, unpacked, no network needed
    assert home == isolated / "tiny" / "tiny" and by_hand.read_bytes() == blob
    assert len(list_images(home / "HR")) == 3


def test_unexpected_image_count_warns(server, monkeypatch):
    members, _ = tiny_members(n=2)
    blob = make_archive("tar", members)
    server.files["tiny.tar"] = blob
    register(monkeypatch, "tiny", Archive(url=server.url("tiny.tar"), sha256=sha256(blob)), n_images=5)
    with pytest.warns(UserWarning, match="expected 5 HR images, found 2"):
        dataset_path("tiny", download=True, quiet=True)


def test_folders_with_wrappers_aliases_and_file_parts(server, monkeypatch, isolated):
    """A DIV2KRK-like release: the home folder under another name, kernels as non-image files."""
    members = {}
    for i in (1, 2, 10):
        members[f"TinyRK_public/gt/img_{i}_gt.png"] = png_bytes(i)[0]
        members[f"TinyRK_public/lr_x2/im_{i}.png"] = png_bytes(20 + i, size=(6, 8))[0]
        members[f"TinyRK_public/gt_k_x2/kernel_{i}.mat"] = b"MATLAB 5.0 MAT-file (fake)"
    blob = make_archive("zip", members)
    server.files["TinyRK_public.zip"] = blob
    register(monkeypatch, "tinyrk", Archive(url=server.url("TinyRK_public.zip"), md5=hashlib.md5(blob).hexdigest()),
             home="TinyRK", home_aliases=("TinyRK_public",),
             parts={"hr": "gt", "lr_x2": "lr_x2", "kernels_x2": "gt_k_x2"}, file_parts=("kernels_x2",))

    hr = dataset_path("tinyrk", download=True, quiet=True)
    assert hr == isolated / "TinyRK_public" / "TinyRK_public" / "gt"
    assert [p.name for p in list_images(hr)] == ["img_1_gt.png", "img_2_gt.png", "img_10_gt.png"]
    assert [p.name for p in list_images(dataset_path("tinyrk", part="lr_x2"))] == ["im_1.png", "im_2.png",
                                                                                   "im_10.png"]
    kernels = dataset_path("tinyrk", part="kernels_x2")
    assert {p.name for p in kernels.iterdir()} == {"kernel_1.mat", "kernel_2.mat", "kernel_10.mat"}
    with pytest.raises(ValueError, match="no part 'lr_x4'.*hr, lr_x2, kernels_x2"):
        dataset_path("tinyrk", part="lr_x4")


# ---------------------------------------------------------------------------------------------
# resuming
# ---------------------------------------------------------------------------------------------


def big_blob() -> bytes:
    """An archive of a few hundred kB, so that a cut leaves a real partial file."""
    members = {f"tiny/HR/img_{i}.png": png_bytes(i, size=(160, 200))[0] for i in range(1, 4)}
    return make_archive("tar", members)


def test_resume_after_a_cut_uses_range_and_verifies(server, monkeypatch, isolated):
    blob = big_blob()
    server.files["tiny.tar"] = blob
    server.cut_next = 1  # the first response stops halfway and closes the connection
    register(monkeypatch, "tiny", Archive(url=server.url("tiny.tar"), sha256=sha256(blob)))

    folder = dataset_path("tiny", download=True, quiet=True)
    assert len(list_images(folder)) == 3
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(blob) // 2}-"]


def test_a_partial_file_from_an_earlier_call_is_resumed(server, tmp_path):
    blob = big_blob()
    server.files["f.tar"] = blob
    dest = tmp_path / "dl" / "f.tar"
    dest.parent.mkdir()
    (tmp_path / "dl" / "f.tar.part").write_bytes(blob[:1000])

    assert download_file(server.url("f.tar"), dest, sha256=sha256(blob), quiet=True) == dest
    assert dest.read_bytes() == blob and not (tmp_path / "dl" / "f.tar.part").exists()
    assert [r["range"] for r in server.requests] == ["bytes=1000-"]


def test_too_many_cuts_keep_the_part_for_the_next_call(server, tmp_path):
    blob = big_blob()
    server.files["f.tar"] = blob
    server.cut_next = 10
    dest = tmp_path / "f.tar"
    with pytest.raises(DownloadError, match=r"cut 3 times") as err:
        download_file(server.url("f.tar"), dest, sha256=sha256(blob), retries=2, quiet=True, timeout=5)
    assert str(dest) in str(err.value) and server.url("f.tar") in str(err.value)
    part = tmp_path / "f.tar.part"
    kept = part.stat().st_size
    assert 0 < kept < len(blob) and not dest.exists() and len(server.requests) == 3

    server.cut_next = 0
    download_file(server.url("f.tar"), dest, sha256=sha256(blob), quiet=True, timeout=5)
    assert dest.read_bytes() == blob
    assert server.requests[-1]["range"] == f"bytes={kept}-" and len(server.requests) == 4


def test_a_server_without_range_support_restarts_from_zero(server, tmp_path):
    blob = big_blob()
    server.files["f.tar"] = blob
    server.honour_range = False
    (tmp_path / "f.tar.part").write_bytes(b"x" * 500)  # would corrupt the file if appended to
    download_file(server.url("f.tar"), tmp_path / "f.tar", sha256=sha256(blob), quiet=True)
    assert (tmp_path / "f.tar").read_bytes() == blob
    assert server.requests[0]["range"] == "bytes=500-"


def test_a_complete_part_file_is_finished_by_a_416_answer(server, tmp_path):
    blob = big_blob()
    server.files["f.tar"] = blob
    (tmp_path / "f.tar.part").write_bytes(blob)
    download_file(server.url("f.tar"), tmp_path / "f.tar", sha256=sha256(blob), quiet=True)
    assert (tmp_path / "f.tar").read_bytes() == blob and len(server.requests) == 1


# ---------------------------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------------------------


def test_checksum_mismatch_removes_only_the_bad_file(server, monkeypatch, isolated):
    members, _ = tiny_members()
    blob = make_archive("tar.gz", members)
    server.files["tiny.tar.gz"] = blob
    wrong = "0" * 64
    register(monkeypatch, "tiny", Archive(url=server.url("tiny.tar.gz"), sha256=wrong))
    downloads = isolated / "downloads"
    downloads.mkdir(parents=True)
    keep = [downloads / "other.zip", isolated / "notes.txt", downloads / "other.zip.part"]
    for path in keep:
        path.write_bytes(b"not ours to delete")

    with pytest.raises(ChecksumError) as err:
        dataset_path("tiny", download=True, quiet=True)
    message = str(err.value)
    assert "tiny.tar.gz" in message and wrong in message and sha256(blob) in message
    assert not (downloads / "tiny.tar.gz").exists() and not (downloads / "tiny.tar.gz.part").exists()
    assert not (isolated / "tiny").exists()  # nothing unpacked
    assert all(path.read_bytes() == b"not ours to delete" for path in keep)


def test_md5_is_checked_when_it_is_the_recorded_checksum(server, tmp_path):
    blob = big_blob()
    server.files["f.tar"] = blob
    good = hashlib.md5(blob).hexdigest()
    download_file(server.url("f.tar"), tmp_path / "ok.tar", md5=good, quiet=True)
    with pytest.raises(ChecksumError, match=f"MD5: expected {'f' * 32}, got {good}"):
        download_file(server.url("f.tar"), tmp_path / "bad.tar", md5="f" * 32, quiet=True)
    assert not (tmp_path / "bad.tar").exists() and (tmp_path / "ok.tar").exists()


def test_a_wrong_file_placed_by_hand_is_removed(tmp_path):
    dest = tmp_path / "f.zip"
    dest.write_bytes(b"something else")
    with pytest.raises(ChecksumError, match="f.zip"):
        download_file(closed_port_url("f.zip"), dest, sha256="a" * 64, quiet=True)
    assert not dest.exists()


def test_no_recorded_checksum_warns_with_the_sha256(server, monkeypatch):
    members, _ = tiny_members()
    blob = make_archive("zip", members)
    server.files["tiny.zip"] = blob
    register(monkeypatch, "tiny", Archive(url=server.url("tiny.zip"), sha256=None))
    with pytest.warns(UnverifiedDownloadWarning, match=f"could not be verified.*{sha256(blob)}"):
        folder = dataset_path("tiny", download=True, quiet=True)
    assert len(list_images(folder)) == 3


# ---------------------------------------------------------------------------------------------
# no network, local folders
# ---------------------------------------------------------------------------------------------


def test_no_network_names_the_manual_steps(monkeypatch, isolated):
    url = closed_port_url("tiny.tar.gz")
    digest = "ab" * 32
    register(monkeypatch, "tiny", Archive(url=url, sha256=digest))
    with pytest.raises(DownloadError) as err:
        dataset_path("tiny", download=True, quiet=True)
    message = str(err.value)
    assert url in message
    assert str(isolated / "downloads" / "tiny.tar.gz") in message  # where to put the file
    assert "SHA-256" in message and digest in message  # that it will be verified
    assert "COURSE_DATA_TINY" in message and "root=" in message
    assert not list(isolated.rglob("*.part")) and not (isolated / "tiny").exists()

    with pytest.raises(FileNotFoundError, match=re.escape(url)):
        dataset_path("tiny", download=False)


def test_a_local_folder_is_used_instead_of_downloading(monkeypatch, tmp_path):
    register(monkeypatch, "tiny", Archive(url=closed_port_url("tiny.zip"), sha256="ab" * 32))
    members, pixels = tiny_members(n=2)
    flat = tmp_path / "my_images"
    flat.mkdir()
    for i, array in enumerate(pixels, 1):
        Image.fromarray(array).save(flat / f"{i}.png")
    assert dataset_path("tiny", root=flat) == flat
    assert len(load_dataset_images("tiny", root=flat)) == 2

    layout = tmp_path / "my_copy"  # the archive's layout, one folder up
    for name, data in members.items():
        (layout / name).parent.mkdir(parents=True, exist_ok=True)
        (layout / name).write_bytes(data)
    assert dataset_path("tiny", root=layout) == layout / "tiny" / "HR"
    assert dataset_path("tiny", root=layout / "tiny", part="lr_x2") == layout / "tiny" / "LR_x2"

    monkeypatch.setenv(dataset_env_var("tiny"), str(flat))
    assert dataset_env_var("tiny") == "COURSE_DATA_TINY"
    assert dataset_path("tiny") == flat
    expected = torch.from_numpy(pixels[0].astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(load_dataset_images("tiny")[0], expected)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        dataset_path("tiny", root=empty)
    with pytest.raises(ValueError, match="holds no images for part 'lr_x2'"):
        dataset_path("tiny", root=flat, part="lr_x2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_path("tiny", root=tmp_path / "missing")
    assert not (tmp_path / "cache").exists()  # nothing was downloaded


def test_an_unpacked_folder_without_the_layout_is_not_touched(monkeypatch, isolated):
    register(monkeypatch, "tiny", Archive(url=closed_port_url("tiny.zip"), sha256="ab" * 32))
    stranger = isolated / "tiny" / "notes.txt"
    stranger.parent.mkdir(parents=True)
    stranger.write_text("mine")
    with pytest.raises(FileExistsError, match="does not hold the data set"):
        dataset_path("tiny", download=True)
    assert stranger.read_text() == "mine"


def test_unsafe_archive_members_are_refused(server, monkeypatch, isolated):
    blob = make_archive("tar", {"tiny/HR/a.png": png_bytes(1)[0], "../evil.png": b"x"})
    server.files["tiny.tar"] = blob
    register(monkeypatch, "tiny", Archive(url=server.url("tiny.tar"), sha256=sha256(blob)))
    with pytest.raises(ValueError, match="unsafe member '../evil.png'"):
        dataset_path("tiny", download=True, quiet=True)
    assert not (isolated.parent / "evil.png").exists()
    assert not (isolated / "tiny").exists() and not (isolated / "tiny.unpacking").exists()


# ---------------------------------------------------------------------------------------------
# helpers and the registry
# ---------------------------------------------------------------------------------------------


def test_list_images_natural_order_and_filters(tmp_path):
    for name in ["im_10.png", "im_2.PNG", "im_1.jpg", ".hidden.png", "notes.txt", "k.mat"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["im_1.jpg", "im_2.PNG", "im_10.png"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")


def test_load_dataset_images_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_images"):
        load_dataset_images(tmp_path, max_images=0)
    with pytest.raises(ValueError, match="no images"):
        load_dataset_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="registered data sets"):
        load_dataset_images(tmp_path / "nope")
    Image.fromarray(np.full((4, 5), 128, dtype=np.uint8)).save(tmp_path / "g.png")
    assert load_dataset_images(str(tmp_path), channels=1)[0].shape == (1, 4, 5)
    assert load_dataset_images(tmp_path)[0].shape == (3, 4, 5)


def test_cache_folder_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert datasets.data_dir() == Path.home() / ".cache" / "course_lib" / "datasets"
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert datasets.data_dir() == tmp_path / "elsewhere"


def test_the_registry_entries():
    assert set(DATASETS) == {"div2k_train", "div2k_valid", "set5", "set14", "b100", "urban100", "div2krk"}
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.archive.url.startswith("https://"), name
        assert "hr" in spec.parts and spec.n_images
        checked = spec.archive.sha256 or spec.archive.md5
        assert bool(checked) == (name != "div2krk"), name  # DIV2KRK: no checksum on public record
    assert DATASETS["div2k_train"].archive.size == 3530603713
    benchmark = {DATASETS[n].archive for n in ("set5", "set14", "b100", "urban100")}
    assert len(benchmark) == 1  # one archive, unpacked once, serves all four
    assert DATASETS["div2krk"].file_parts == ("kernels_x2", "kernels_x4")
    assert datasets._spec("BSD100") is DATASETS["b100"] and datasets._spec("Set5") is DATASETS["set5"]
    with pytest.raises(ValueError, match="unknown data set 'set6'.*set5"):
        dataset_path("set6")


def test_archive_and_spec_validation():
    assert Archive(url="https://x.org/a/b.tar.gz").kind == "tar.gz"
    assert Archive(url="https://x.org/a/b.tgz").folder == "b"
    with pytest.raises(ValueError, match="sha256"):
        Archive(url="https://x.org/b.zip", sha256="ABC")
    with pytest.raises(ValueError, match="archive kind"):
        Archive(url="https://x.org/b.rar")
    with pytest.raises(ValueError, match="'hr'"):
        DatasetSpec(name="x", archive=Archive(url="https://x.org/b.zip"), home="x", parts={"lr": "LR"})
    with pytest.raises(ValueError, match="relative path"):
        DatasetSpec(name="x", archive=Archive(url="https://x.org/b.zip"), home="../x", parts={"hr": "."})
