"""Issue 15 item 7: install toolkit/ as `applied_aitk` and plugins/ as `applied_aitk.usecases`
(setuptools package-dir mapping; the folders keep their names), and name the distribution
`applied-aitk` (`aitk` on PyPI is an unrelated project). Idempotent: run it from the repository
root again after a rebase; it rewrites imports, dotted module names and install lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

NS = "applied_aitk"
USECASES = f"{NS}.usecases"
DIST = "applied-aitk"
BUILTIN = "chatbot|codegen|defects|forecast|fraud"
ROOTS = ("toolkit/", "plugins/", "tests/", "examples/", "benchmarks/", "docs/", ".ci/", "README.md", "pyproject.toml", "Makefile")
SKIP = re.compile(r"(^|/)sample_data/|\.(png|jpg|npy|onnx|parquet|gz)$")

RULES = [
    # plugins.<builtin>... -> applied_aitk.usecases.<builtin>...
    (re.compile(rf"(?<![\w./-])plugins\.(?=(?:{BUILTIN})\b)"), f"{USECASES}."),
    (re.compile(r"(?<![\w.])(from|import) plugins\b(?!/)"), rf"\1 {USECASES}"),
    # toolkit.<name> -> applied_aitk.<name>; from/import toolkit -> applied_aitk
    (re.compile(r"(?<![\w./-])toolkit\.(?=[A-Za-z_])"), f"{NS}."),
    (re.compile(r"(?<![\w.])(from|import) toolkit\b(?![/.])"), rf"\1 {NS}"),
    # the distribution: 'aitk[train]', "aitk" as a dependency, DISTRIBUTION
    (re.compile(r"(?<![\w./-])aitk\[(train|ray|dev|train,dev|train,dev,ray)\]"), rf"{DIST}[\1]"),
    (re.compile(r'dependencies = \["aitk"\]'), f'dependencies = ["{DIST}"]'),
    (re.compile(r'^DISTRIBUTION = "aitk"$', re.M), f'DISTRIBUTION = "{DIST}"'),
    (re.compile(r'^name = "aitk"$', re.M), f'name = "{DIST}"'),
]

PACKAGING = f'''[tool.setuptools]
# toolkit/ installs as `{NS}`, plugins/ as `{USECASES}`: no top-level `toolkit` or `plugins`.
package-dir = {{ "{NS}" = "toolkit", "{USECASES}" = "plugins" }}
packages = [
PACKAGES]
'''


def files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *ROOTS], capture_output=True, text=True, check=True).stdout.split()
    return [Path(p) for p in listed if not SKIP.search(p) and Path(p).is_file()]


def rewrite(path: Path) -> bool:
    try:
        with open(path, newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        return False
    new = text
    for pattern, replacement in RULES:
        new = pattern.sub(replacement, new)
    if new != text:
        with open(path, "w", newline="") as f:
            f.write(new)
    return new != text


def packages() -> list[str]:
    """Every tracked folder under toolkit/ and plugins/ (data folders too, as packages.find's
    namespace discovery listed them before), under its installed name."""
    tracked = subprocess.run(["git", "ls-files", "toolkit", "plugins"], capture_output=True, text=True, check=True).stdout.split()
    folders = {Path(p).parent for p in tracked} | {parent for p in tracked for parent in Path(p).parents}
    names = []
    for folder, name in (("toolkit", NS), ("plugins", USECASES)):
        for path in sorted(f for f in folders if f == Path(folder) or Path(folder) in f.parents):
            names.append(".".join([name, *path.relative_to(folder).parts]))
    return names


def packaging() -> None:
    """pyproject.toml: packages.find over toolkit*/plugins* becomes the package-dir mapping."""
    path = Path("pyproject.toml")
    text = path.read_text()
    listed = "".join(f'    "{p}",\n' for p in packages())
    block = PACKAGING.replace("PACKAGES", listed)
    old = re.compile(r'\[tool\.setuptools\.packages\.find\]\ninclude = \["toolkit\*", "plugins\*"\]\n')
    current = re.compile(r"\[tool\.setuptools\]\n# toolkit/ installs as .*\npackage-dir = .*\npackages = \[[^\]]*\]\n")
    text, n = old.subn(block, text)
    if n == 0:
        text, n = current.subn(block, text)
    if n != 1:
        sys.exit("pyproject.toml: neither the packages.find block nor the package-dir block found")
    path.write_text(text)


def main() -> None:
    changed = [str(p) for p in files() if rewrite(p)]
    packaging()
    print(f"rewrote {len(changed)} files:", *changed, sep="\n  ")
    left = subprocess.run(["git", "grep", "-nE", r"(^|[^\w./-])(from|import) (toolkit|plugins)\b|(^|[^\w./-])(toolkit|plugins\.(" + BUILTIN + r"))\.[a-z_]|toolkit\\\.",
                           "--", *ROOTS, ":!*sample_data*"], capture_output=True, text=True).stdout
    if left:
        print("left for a person to check:\n" + left)


if __name__ == "__main__":
    main()
