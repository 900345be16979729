"""Render docs/labeler.png: the ``backswap label`` page in headless Chromium with a labeled image.

Builds a small folder of bird stamps pasted on photos (Tux Paint assets from Debian's ``tuxpaint-stamps``
and ``tuxpaint`` packages), labels two images, then paints the third one *through the page* by clicking
the cells the bird covers (>= 25 % of a cell, as in the paper), and takes the screenshot before saving.

    python docs/make_labeler_screenshot.py [--out docs/labeler.png]

Needs /usr/bin/chromium, /usr/bin/chromedriver and selenium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from torch_backswap.labeler import serve_labeler
from torch_backswap.labels import dense_to_patch_grid

STAMPS = Path("/usr/share/tuxpaint/stamps/animals/birds")
PHOTOS = Path("/usr/share/tuxpaint/templates")
SCENES = [  # (image id, bird stamp, photo, bird size as a fraction of the side, centre x, centre y)
    ("lake/0001_pelican.jpg", "pelican.png", "ocean_waves.jpg", 0.62, 0.45, 0.55),
    ("lake/0002_drake.jpg", "drake.png", "ocean_splash.jpg", 0.5, 0.55, 0.6),
    ("lake/0003_heron.jpg", "heron_greatblue.png", "ocean_waves.jpg", 0.78, 0.5, 0.52),
    ("forest/0004_owl.jpg", "owl.png", "redwoods_above.jpg", 0.55, 0.5, 0.5),
    ("forest/0005_magpie.jpg", "magpie.png", "mossy_log.jpg", 0.6, 0.45, 0.55),
]
SIDE = 448
GRID = 16


def compose(stamp: Path, photo: Path, frac: float, cx: float, cy: float) -> tuple[Image.Image, torch.Tensor]:
    """Bird pasted on a square centre crop of the photo; returns the RGB image and the alpha (1,SIDE,SIDE)."""
    with Image.open(photo) as im:
        bg = im.convert("RGB")
    short = min(bg.size)
    left, top = (bg.width - short) // 2, (bg.height - short) // 2
    bg = bg.crop((left, top, left + short, top + short)).resize((SIDE, SIDE), Image.BICUBIC)
    with Image.open(stamp) as im:
        bird = im.convert("RGBA")
    scale = frac * SIDE / max(bird.size)
    bird = bird.resize((max(1, round(bird.width * scale)), max(1, round(bird.height * scale))), Image.LANCZOS)
    x, y = round(cx * SIDE - bird.width / 2), round(cy * SIDE - bird.height / 2)
    layer = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 0))
    layer.paste(bird, (x, y))
    out = Image.alpha_composite(bg.convert("RGBA"), layer).convert("RGB")
    alpha = torch.frombuffer(bytearray(layer.getchannel("A").tobytes()), dtype=torch.uint8).view(1, SIDE, SIDE)
    return out, alpha.float() / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "labeler.png"))
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    work = Path(tempfile.mkdtemp(prefix="backswap-shot-"))
    images = work / "birds"
    grids = {}
    for image_id, stamp, photo, frac, cx, cy in SCENES:
        img, alpha = compose(STAMPS / stamp, PHOTOS / photo, frac, cx, cy)
        (images / image_id).parent.mkdir(parents=True, exist_ok=True)
        img.save(images / image_id, quality=92)
        grids[image_id] = dense_to_patch_grid(alpha[None], GRID, threshold=0.25)[0]

    out_path = Path(args.out).resolve()
    os.chdir(work)  # so the page shows the labels file as plain "labels.csv"
    server = serve_labeler("birds", grid_size=GRID, out="labels.csv")
    ids = list(server.session.catalog)
    # two images already labeled, so the counter reads like a session under way
    for image_id in ids[:2]:
        server.session.save(image_id, "".join("1" if v else "0" for v in grids[image_id].flatten().tolist()))
    target = ids[2]
    server.start()

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={work / 'profile'}", "--window-size=1200,860"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(server.url)
        for _ in range(200):
            if driver.execute_script("return document.body.dataset.ready") == "1":
                break
            time.sleep(0.05)
        assert driver.execute_script("return document.body.dataset.current") == target
        cells = driver.find_elements(By.CSS_SELECTOR, "#grid .cell")
        for index in torch.nonzero(grids[target].flatten()).flatten().tolist():
            cells[index].click()
        driver.execute_script("document.activeElement.blur()")
        driver.save_screenshot(str(out_path))
    finally:
        driver.quit()
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
