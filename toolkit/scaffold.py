"""`aitk plugin new NAME`: a pip-installable plugin package with a working use case and its test."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from applied_aitk.errors import AitkError

TEMPLATES = Path(__file__).parent / "templates" / "plugin"


def new_plugin(name: str, parent: Path) -> Path:
    """Write ``parent/aitk-NAME`` from the templates; returns its path. Refuses to overwrite."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise AitkError(f"plugin name {name!r}: expected a lowercase Python identifier such as 'churn'")
    root = parent / f"aitk-{name}"
    if root.exists():
        raise AitkError(f"{root}: already exists")
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        relative = template.relative_to(TEMPLATES).with_suffix("").as_posix().replace("package/", f"aitk_{name}/")
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(template.read_text(), name))
    return root


def render(text: str, name: str) -> str:
    camel = "".join(part.capitalize() for part in name.split("_"))
    return text.replace("{{name}}", name).replace("{{Name}}", camel)
