"""Tests for the patch-labeling web page (torch_backswap.labeler): HTTP safety, saving, resuming, active
selection, and one end-to-end run in real headless Chromium."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from torch_backswap.cli import build_parser
from torch_backswap.labeler import ActiveSelector, ImageCatalog, LabelSession, cell_uncertainty, serve_labeler
from torch_backswap.labels import PatchLabels

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SECRET = b"TOP-SECRET-NOT-AN-IMAGE"


def _png(path: Path, color=(200, 40, 40), size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _png(root / "a.png", (10, 10, 10))
    _png(root / "b.png", (128, 128, 128))
    Image.new("RGB", (32, 32), (0, 90, 200)).save(root / "c.jpg")
    _png(root / "sub" / "d.png", (250, 250, 250))
    (root / "notes.txt").write_text("not an image")
    (root / "fake.png").write_bytes(b"plain text with a .png name")
    (root / ".hidden.png").write_bytes((root / "a.png").read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n" + SECRET)
    (outside / "secret.txt").write_bytes(SECRET)
    os.symlink(outside / "secret.png", root / "link.png")
    os.symlink(outside, root / "linkdir")
    return root


@pytest.fixture()
def server(image_dir: Path, tmp_path: Path):
    srv = serve_labeler(image_dir, grid_size=4, out=tmp_path / "out" / "labels.csv")
    srv.start()
    yield srv
    srv.close()


def _request(srv, method: str, path: str, body=None, headers=None):
    """Raw request: the path goes on the wire exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, payload, resp


def _json(srv, path: str):
    status, payload, _ = _request(srv, "GET", path)
    assert status == 200, (path, status, payload)
    return json.loads(payload)


# ---------------------------------------------------------------------------------------------- safety
@pytest.mark.parametrize(
    "path",
    [
        "/img/../outside/secret.png",
        "/img/../../etc/passwd",
        "/img/sub/../../outside/secret.png",
        "/img/%2e%2e/outside/secret.png",
        "/img/%2e%2e%2foutside%2fsecret.png",
        "/img/%2E%2E%2Foutside%2Fsecret.png",
        "/img/..%2foutside%2fsecret.png",
        "/img/%252e%252e%252foutside%252fsecret.png",
        "/img/%25252e%25252e%25252foutside%25252fsecret.png",
        "/img//etc/passwd",
        "/img/%2fetc%2fpasswd",
        "/img/" + "%2f" * 2 + "etc/passwd",
        "/img/..\\outside\\secret.png",
        "/img/..%5coutside%5csecret.png",
        "/img/a.png%00.txt",
        "/img/%ff%fe.png",
        "/img/link.png",
        "/img/linkdir/secret.png",
        "/img/linkdir/secret.txt",
        "/img/./a.png",
        "/img/.hidden.png",
        "/img/",
        "/img/sub",
        "/img/sub/",
        "/static/../server.py",
        "/static/../../labels.py",
        "/../../etc/passwd",
        "/etc/passwd",
        "/api/image?id=../outside/secret.png",
        "/api/image?id=%2e%2e%2foutside%2fsecret.png",
        "/api/image?id=%252e%252e%252foutside%252fsecret.png",
        "/api/image?id=/etc/passwd",
        "/api/image?id=linkdir/secret.png",
        "/api/next?current=../x.png",
        "/api/neighbor?id=../outside/secret.png&step=1",
    ],
)
def test_path_traversal_is_refused(server, path):
    status, payload, _ = _request(server, "GET", path)
    assert status in (400, 404), (path, status)
    assert SECRET not in payload
    assert b"root:" not in payload


def test_non_image_files_are_refused(server):
    for path in ["/img/notes.txt", "/img/fake.png", "/api/image?id=notes.txt", "/api/image?id=fake.png"]:
        assert _request(server, "GET", path)[0] == 404, path


def test_images_are_served_with_their_type(server, image_dir):
    status, payload, resp = _request(server, "GET", "/img/a.png")
    assert status == 200 and payload == (image_dir / "a.png").read_bytes()
    assert resp.getheader("Content-Type") == "image/png"
    assert resp.getheader("X-Content-Type-Options") == "nosniff"
    status, payload, resp = _request(server, "GET", "/img/sub/d.png")
    assert status == 200 and resp.getheader("Content-Type") == "image/png"
    assert _request(server, "GET", "/img/c.jpg")[2].getheader("Content-Type") == "image/jpeg"


def test_catalog_lists_only_images_inside(image_dir):
    assert list(ImageCatalog(image_dir)) == ["a.png", "b.png", "c.jpg", "sub/d.png"]


def test_catalog_is_lazy_and_decodes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "many"
    root.mkdir()
    Image.new("RGB", (4, 4)).save(root / "0000.png")
    data = (root / "0000.png").read_bytes()
    for i in range(1, 3000):
        (root / f"{i:04d}.png").write_bytes(data)
    opened = []
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: opened.append(args))
    catalog = ImageCatalog(root)
    assert catalog.get(0) == "0000.png" and catalog.get(9) == "0009.png"
    assert catalog.known == 10 and not catalog.exhausted
    assert len(catalog) == 3000 and catalog.exhausted
    assert not opened


def test_server_binds_loopback_only_and_checks_host(server):
    assert server.server_address[0] == "127.0.0.1"
    status, _, _ = _request(server, "GET", "/api/state", headers={"Host": "evil.example:80"})
    assert status == 400


def test_page_and_assets(server):
    status, payload, resp = _request(server, "GET", "/")
    assert status == 200 and b"labeler.js" in payload
    assert "script-src 'self'" in resp.getheader("Content-Security-Policy")
    for asset in ["/static/labeler.js", "/static/labeler.css"]:
        assert _request(server, "GET", asset)[0] == 200
    assert _request(server, "GET", "/static/index.htm")[0] == 404


# ---------------------------------------------------------------------------------------- saving/resume
def test_save_writes_the_file_atomically(server, tmp_path, monkeypatch):
    out = tmp_path / "out" / "labels.csv"
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src), Path(dst), Path(src).read_text()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    mask = "1100" + "0110" + "0000" + "0001"
    status, payload, _ = _request(server, "POST", "/api/label", {"id": "b.png", "mask": mask})
    assert status == 200 and json.loads(payload)["labeled"] == 1
    # the complete new content went to a temporary file in the same folder, then os.replace'd over out
    assert len(replaced) == 1
    src, dst, content = replaced[0]
    assert dst == out and src.parent == out.parent and src != out
    assert content == out.read_text() == f"image,grid_size,mask\nb.png,4,{mask}\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.csv"]  # no temp file left behind
    labels = PatchLabels.read(out)
    assert labels.ids == ["b.png"]
    assert labels["b.png"].flatten().tolist() == [c == "1" for c in mask]
    # overwriting keeps one row per image
    _request(server, "POST", "/api/label", {"id": "b.png", "mask": "1" * 16})
    _request(server, "POST", "/api/label", {"id": "sub/d.png", "mask": "0" * 15 + "1"})
    assert out.read_text().splitlines() == ["image,grid_size,mask", "b.png,4," + "1" * 16, "sub/d.png,4," + "0" * 15 + "1"]


def test_bad_posts_are_refused(server, tmp_path):
    out = tmp_path / "out" / "labels.csv"
    ok = {"id": "a.png", "mask": "0" * 16}
    assert _request(server, "POST", "/api/label", {"id": "a.png", "mask": "01"})[0] == 400
    assert _request(server, "POST", "/api/label", {"id": "a.png", "mask": "2" * 16})[0] == 400
    assert _request(server, "POST", "/api/label", {"id": "../outside/secret.png", "mask": "0" * 16})[0] == 400
    assert _request(server, "POST", "/api/label", {"id": "notes.txt", "mask": "0" * 16})[0] == 404
    assert _request(server, "POST", "/api/label", {"id": "missing.png", "mask": "0" * 16})[0] == 404
    assert _request(server, "POST", "/api/label", b"{not json")[0] == 400
    assert _request(server, "POST", "/api/label", json.dumps(ok).encode(), {"Content-Type": "text/plain"})[0] == 415
    assert _request(server, "POST", "/api/label", ok, {"Origin": "http://evil.example"})[0] == 403
    assert _request(server, "POST", "/api/nothing", ok)[0] == 404
    assert not out.exists()


def test_resume_from_existing_file(image_dir, tmp_path):
    out = tmp_path / "labels.csv"
    with serve_labeler(image_dir, grid_size=4, out=out) as srv:
        srv.start()
        assert _json(srv, "/api/next")["id"] == "a.png"
        _request(srv, "POST", "/api/label", {"id": "a.png", "mask": "1" + "0" * 15})
        _request(srv, "POST", "/api/skip", {"id": "b.png"})
        assert _json(srv, "/api/next?current=a.png")["id"] == "c.jpg"
    with serve_labeler(image_dir, grid_size=4, out=out) as srv:
        srv.start()
        state = _json(srv, "/api/state")
        assert state["labeled"] == 1
        info = _json(srv, "/api/image?id=a.png")
        assert info["source"] == "label" and info["mask"] == "1" + "0" * 15
        # skips last one session; labeled images are never offered again
        assert _json(srv, "/api/next")["id"] == "b.png"
        assert _json(srv, "/api/neighbor?id=b.png&step=-1")["id"] == "a.png"
    with pytest.raises(ValueError, match="grid_size=8"):
        serve_labeler(image_dir, grid_size=8, out=out)


def test_paper_format_output(image_dir, tmp_path):
    out = tmp_path / "masks.csv"
    with serve_labeler(image_dir, grid_size=4, out=out, paper_format=True) as srv:
        srv.start()
        _request(srv, "POST", "/api/label", {"id": "c.jpg", "mask": "0" * 8 + "1" * 8})
    assert out.read_text().splitlines() == ["info,mask", "c.jpg," + "0" * 8 + "1" * 8]
    assert PatchLabels.read(out).grid_size == 4


def test_next_walks_folder_order_and_ends(server):
    seen, current = [], None
    while True:
        nxt = _json(server, "/api/next" + (f"?current={current}" if current else ""))["id"]
        if nxt is None:
            break
        seen.append(nxt)
        _request(server, "POST", "/api/label", {"id": nxt, "mask": "0" * 16})
        current = nxt
    assert seen == ["a.png", "b.png", "c.jpg", "sub/d.png"]
    assert _json(server, "/api/state")["labeled"] == 4


# ------------------------------------------------------------------------------------------ segmenter
class BrightnessSegmenter(torch.nn.Module):
    """Fake segmenter: every cell's logit is 8 * (mean brightness - 0.5). Mid-gray = most uncertain."""

    input_size = 16

    def __init__(self, grid_size: int = 4, offset: float = 0.0) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.offset = torch.nn.Parameter(torch.tensor(float(offset)))

    def forward(self, images):
        x = images.float() / 255.0
        mean = x.mean(dim=(1, 2, 3))
        logits = 8.0 * (mean - 0.5) + self.offset
        return logits[:, None, None].expand(-1, self.grid_size, self.grid_size)


def test_cell_uncertainty():
    prob = torch.stack([torch.full((4, 4), 0.5), torch.zeros(4, 4), torch.ones(4, 4)])
    assert torch.allclose(cell_uncertainty(prob), torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)
    with pytest.raises(ValueError, match="probability must have shape"):
        cell_uncertainty(torch.zeros(4, 4))


def test_active_selector_scores_lazily_in_chunks():
    ids = [f"{i:03d}" for i in range(100)]
    calls = []
    sign = [1.0]

    def score(chunk):
        calls.append(list(chunk))
        return torch.tensor([sign[0] * int(i) for i in chunk])  # sign 1: higher id = more uncertain

    sel = ActiveSelector(lambda start, size: ids[start : start + size], score, chunk_size=10, strategy="uncertainty")
    assert sel.pick(lambda i: False) == "009"  # only the first chunk was scored
    assert len(calls) == 1
    assert sel.pick(lambda i: i == "019") == "018"
    assert len(calls) == 2 and len(sel.scores) == 20
    # a new model that ranks the other way round: stale scores are re-checked best-first, a chunk at a
    # time, until the best candidate carries a fresh score
    sign[0] = -1.0
    sel.invalidate()
    assert sel.pick(lambda i: False) == "000"
    assert calls[2] == [f"{i:03d}" for i in range(20, 30)]  # one more unseen chunk
    assert [c[0] for c in calls[3:]] == ["019", "009"]  # then the stale ones, best old score first
    assert all(v == sel.version for _, v in sel.scores.values())
    with pytest.raises(ValueError, match="chunk_size"):
        ActiveSelector(lambda s, n: [], score, chunk_size=0)


def _clustered_pool(n_clusters: int = 3, copies: int = 5):
    """Ids in clusters of near-duplicates (features within 1e-3 of their cluster centre); every image is
    uncertain, the first cluster most of all (so plain uncertainty would pick only from it)."""
    ids, feats, unc = [], {}, {}
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(n_clusters, 8)
    for c in range(n_clusters):
        for k in range(copies):
            image_id = f"c{c}_{k}"
            ids.append(image_id)
            feats[image_id] = centres[c] + 1e-3 * torch.randn(8, generator=g)
            unc[image_id] = 0.9 - 0.1 * c - 0.001 * k

    def score(chunk):
        return torch.tensor([unc[i] for i in chunk]), torch.stack([feats[i] for i in chunk])

    return ids, score


def test_kcenter_selection_never_picks_two_near_duplicates():
    ids, score = _clustered_pool()
    sel = ActiveSelector(lambda start, size: ids[start : start + size], score, chunk_size=100, strategy="kcenter",
                         top_k=15)
    taken: set[str] = set()
    picks = []
    for _ in range(3):
        picks.append(sel.pick(taken.__contains__))
        taken.add(picks[-1])
    assert picks[0] == "c0_0"  # nothing covered yet: the most uncertain
    assert sorted(p.split("_")[0] for p in picks) == ["c0", "c1", "c2"]  # one per cluster of near-duplicates
    # the uncertainty rule, for contrast, stays inside the most uncertain cluster
    plain = ActiveSelector(lambda start, size: ids[start : start + size], score, chunk_size=100, strategy="uncertainty")
    taken = set()
    for _ in range(3):
        taken.add(plain.pick(taken.__contains__))
    assert {p.split("_")[0] for p in taken} == {"c0"}
    # labeled images count as covered: with cluster 0 labeled, the first pick comes from another cluster
    fresh = ActiveSelector(lambda start, size: ids[start : start + size], score, chunk_size=100,
                           strategy="kcenter", top_k=15)
    assert not fresh.pick(lambda i: i.startswith("c0"), covered=["c0_0"]).startswith("c0")


def test_topk_random_selection_is_seeded_and_stays_in_the_uncertain_pool():
    ids = [f"{i:03d}" for i in range(60)]

    def score(chunk):
        return torch.tensor([float(i) for i in chunk])  # higher id = more uncertain

    def sequence(seed: int) -> list[str]:
        sel = ActiveSelector(lambda start, size: ids[start : start + size], score, chunk_size=60,
                             strategy="topk_random", top_k=10, seed=seed)
        taken: set[str] = set()
        for _ in range(5):
            taken.add(sel.pick(taken.__contains__))
        return sel.picked

    first = sequence(0)
    assert first == sequence(0)  # deterministic under a seed
    assert first != sequence(1)
    assert len(set(first)) == 5
    # every pick is among the 10 most uncertain ids still open at that moment (ids 45-59 cover all cases)
    assert all(int(p) >= 45 for p in first)
    assert first != ["059", "058", "057", "056", "055"]  # not the plain ranking


def test_active_selector_strategy_errors():
    ids = ["a", "b"]
    with pytest.raises(ValueError, match="strategy must be one of"):
        ActiveSelector(lambda s, n: ids[s : s + n], lambda c: torch.zeros(len(c)), strategy="best")
    with pytest.raises(ValueError, match="top_k"):
        ActiveSelector(lambda s, n: ids[s : s + n], lambda c: torch.zeros(len(c)), strategy="kcenter", top_k=0)
    # k-center without features (the default strategy with a plain uncertainty score): warns once and
    # falls back to the most uncertain image
    sel = ActiveSelector(lambda s, n: ids[s : s + n], lambda c: torch.tensor([0.2, 0.8][: len(c)]))
    with pytest.warns(UserWarning, match="no features"):
        assert sel.pick(lambda i: False) == "b"
    assert sel.pick(lambda i: i == "b") == "a"
    bad = ActiveSelector(lambda s, n: ids[s : s + n], lambda c: torch.zeros(len(c) + 1), strategy="uncertainty")
    with pytest.raises(ValueError, match=r"must return a \(2,\) tensor"):
        bad.pick(lambda i: False)


def test_segmenter_prefill_and_active_next(image_dir, tmp_path):
    # brightness: a 10/255 (certain background), b 128/255 (uncertain), c blue ~0.38, d 250/255 (certain object)
    with serve_labeler(image_dir, grid_size=4, out=tmp_path / "l.csv", segmenter=BrightnessSegmenter()) as srv:
        srv.start()
        assert _json(srv, "/api/next")["id"] == "b.png"
        info = _json(srv, "/api/image?id=sub/d.png")
        assert info["source"] == "segmenter" and info["mask"] == "1" * 16 and info["uncertainty"] < 0.2
        assert _json(srv, "/api/image?id=a.png")["mask"] == "0" * 16
        _request(srv, "POST", "/api/label", {"id": "b.png", "mask": "0" * 16})
        # k-center (the default): among the uncertain images, the one farthest from what is labelled --
        # not c.jpg, whose cells look most like the labelled b.png
        assert _json(srv, "/api/next?current=b.png")["id"] in {"a.png", "sub/d.png"}
        state = _json(srv, "/api/state")
        assert state["segmenter"] and state["active"]


def test_background_retraining_swaps_the_model(image_dir, tmp_path):
    calls = []
    done = threading.Event()

    def fake_finetune(model, images, labels, **kwargs):
        calls.append((images, list(labels.ids), kwargs))
        with torch.no_grad():
            model.offset.fill_(3.0)  # the "fine-tuned" model is sure everything is object
        done.set()
        return model, [{"epoch": 0}]

    seg = BrightnessSegmenter()
    with serve_labeler(
        image_dir, grid_size=4, out=tmp_path / "l.csv", segmenter=seg, retrain_every=2,
        retrain_kwargs={"epochs": 1}, finetune_fn=fake_finetune,
    ) as srv:
        srv.start()
        _request(srv, "POST", "/api/label", {"id": "a.png", "mask": "0" * 16})
        assert not calls
        _request(srv, "POST", "/api/label", {"id": "b.png", "mask": "1" * 16})
        assert done.wait(10)
        srv.session.retrain_thread.join(10)
        state = _json(srv, "/api/state")
        assert state["retrain_count"] == 1 and state["model_version"] == 1 and state["retrain_error"] is None
        assert calls[0][1] == ["a.png", "b.png"] and calls[0][2]["epochs"] == 1
        assert Path(calls[0][0]) == image_dir
        assert float(seg.offset.detach()) == 0.0  # the served model was trained on a copy
        assert _json(srv, "/api/image?id=c.jpg")["mask"] == "1" * 16


def test_retraining_with_the_real_segmenter_and_finetune(image_dir, tmp_path):
    from torch_backswap.segmenter import PatchSegmenter

    seg = PatchSegmenter(grid_size=4, input_size=32, width=8)
    with serve_labeler(image_dir, grid_size=4, out=tmp_path / "l.csv", segmenter=seg, retrain_every=2,
                       retrain_kwargs={"epochs": 1, "batch_size": 2}) as srv:
        srv.start()
        first = _json(srv, "/api/next")["id"]
        info = _json(srv, f"/api/image?id={first}")
        assert info["source"] == "segmenter" and len(info["mask"]) == 16 and 0.0 <= info["uncertainty"] <= 1.0
        _request(srv, "POST", "/api/label", {"id": "a.png", "mask": "1" * 4 + "0" * 12})
        _request(srv, "POST", "/api/label", {"id": "sub/d.png", "mask": "0" * 12 + "1" * 4})
        srv.session.retrain_thread.join(60)
        state = _json(srv, "/api/state")
        assert state["retrain_error"] is None and state["model_version"] == 1
        assert srv.session.segmenter is not seg
        assert _json(srv, "/api/next")["id"] in {"b.png", "c.jpg"}


def test_cli_parser():
    args = build_parser().parse_args(
        ["label", "imgs", "--grid", "8", "--out", "x.csv", "--segmenter", "m", "--port", "8123",
         "--retrain-every", "25", "--paper-format"]
    )
    assert (args.image_dir, args.grid, args.out, args.segmenter, args.port, args.retrain_every, args.paper_format) == (
        "imgs", 8, "x.csv", "m", 8123, 25, True)
    assert callable(args.func)


def test_invalid_arguments(image_dir, tmp_path):
    with pytest.raises(ValueError, match="grid_size"):
        LabelSession(image_dir, grid_size=0)
    with pytest.raises(NotADirectoryError, match="image_dir"):
        LabelSession(tmp_path / "nope")


# ------------------------------------------------------------------------------------ real Chromium
def _chromium():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"headless Chromium end-to-end test needs {CHROMIUM} and {CHROMEDRIVER} "
                    "(Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="backswap-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,860"]:
        opts.add_argument(flag)
    # an explicit driver path: selenium-manager (which could download browsers) never runs
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    return driver, profile


def _wait(driver, condition, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {condition}")


@pytest.mark.slow
def test_end_to_end_in_headless_chromium(image_dir, tmp_path):
    from selenium.webdriver.common.by import By

    out = tmp_path / "labels.csv"
    driver, profile = _chromium()
    srv = serve_labeler(image_dir, grid_size=4, out=out)
    srv.start()
    try:
        driver.get(srv.url)
        _wait(driver, "return document.body.dataset.ready === '1'")
        assert driver.execute_script("return document.body.dataset.current") == "a.png"
        cells = driver.find_elements(By.CSS_SELECTOR, "#grid .cell")
        assert len(cells) == 16
        painted = [0, 5, 10, 15, 3]
        for i in painted:
            cells[i].click()
        cells[3].click()  # clicking a painted cell erases it
        painted.remove(3)
        assert sorted(int(c.get_attribute("data-index")) for c in driver.find_elements(By.CSS_SELECTOR, "#grid .cell.on")) == painted
        driver.find_element(By.ID, "next").click()
        _wait(driver, "return document.body.dataset.current === 'b.png' && !document.body.dataset.busy")
        assert driver.find_element(By.ID, "labeled").text == "1"
        # keyboard: F fills b.png, Z undoes it, paint one cell, then N saves and moves on
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("f")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#grid .cell.on")) == 16
        body.send_keys("z")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#grid .cell.on")) == 0
        driver.find_elements(By.CSS_SELECTOR, "#grid .cell")[6].click()
        body.send_keys("n")
        _wait(driver, "return document.body.dataset.current === 'c.jpg' && !document.body.dataset.busy")
        # reload: nothing lost, the page comes back on the image it was showing
        driver.refresh()
        _wait(driver, "return document.body.dataset.ready === '1'")
        assert driver.execute_script("return document.body.dataset.current") == "c.jpg"
        assert driver.find_element(By.ID, "labeled").text == "2"
        # previous brings back the saved cells of b.png
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("p")
        _wait(driver, "return document.body.dataset.current === 'b.png' && !document.body.dataset.busy")
        on = [int(c.get_attribute("data-index")) for c in driver.find_elements(By.CSS_SELECTOR, "#grid .cell.on")]
        assert on == [6]
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()
        srv.close()
        shutil.rmtree(profile, ignore_errors=True)
    labels = PatchLabels.read(out)
    assert labels.ids == ["a.png", "b.png"]
    expected_a = torch.zeros(16, dtype=torch.bool)
    expected_a[painted] = True
    assert torch.equal(labels["a.png"].flatten(), expected_a)
    expected_b = torch.zeros(16, dtype=torch.bool)
    expected_b[6] = True
    assert torch.equal(labels["b.png"].flatten(), expected_b)
    assert out.read_text().splitlines()[1:] == [
        "a.png,4," + "".join("1" if i in painted else "0" for i in range(16)),
        "b.png,4," + "0" * 6 + "1" + "0" * 9,
    ]
