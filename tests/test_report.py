"""The evaluation report: one self-contained index.html with the metrics and every plot inline,
checked in a real (headless Chromium) browser opening it from disk."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from tests.conftest import run_aitk
from applied_aitk.report import plot_history, pyplot, save_figure, write_index


def inline_images(index: Path) -> list[str]:
    return re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", index.read_text())


def sample_report(folder: Path) -> Path:
    plt = pyplot()
    for name in ("scores.png", "sub/confusion.png"):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1, 2], [1, 0, 1])
        save_figure(fig, folder / name)
    plot_history([{"epoch": 1, "loss": 1.0, "val_accuracy": 0.5}, {"epoch": 2, "loss": 0.5, "val_accuracy": 0.8}], folder / "training_curves.png")
    (folder / "per_class.csv").write_text("class,f1\na,0.5\nb,0.75\n")
    return write_index(folder, "test report", {"accuracy": 0.875, "per_class": {"a": {"f1": 0.5}, "b": {"f1": 0.75}}, "note": "x<y"})


def test_index_holds_metrics_tables_and_every_plot(tmp_path):
    index = sample_report(tmp_path)
    page = index.read_text()
    assert len(inline_images(index)) == 3 and "training_curves.png" in page.split("scores.png")[0]
    assert "<td>accuracy</td><td>0.875</td>" in page and "x&lt;y" in page and "<td>b</td><td>0.75</td>" in page
    assert not list(tmp_path.glob(".*tmp"))


def test_index_renders_in_headless_chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    index = sample_report(tmp_path / "report")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(index.as_uri())
        sizes = driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        title = driver.title
    finally:
        driver.quit()
    assert title == "test report"
    assert len(sizes) == 3 and all(width > 0 for width in sizes), sizes


def test_evaluate_report_writes_index_with_training_curves(wine, tmp_path):
    report = tmp_path / "report"
    result = run_aitk("wine", "evaluate", str(wine["bundle"]), str(wine["data"] / "test.csv"), "--report", str(report), plugins="wine")
    assert result.returncode == 0, result.stderr
    page = (report / "index.html").read_text()
    assert "<h2>Metrics</h2>" in page and len(inline_images(report / "index.html")) == len(list(report.rglob("*.png")))
