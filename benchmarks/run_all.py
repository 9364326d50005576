"""`make bench`: every benchmark script, one after another, each printing its table.

Use-case benchmarks read the real data sets from ../shared/data (pass --data to a script to
point elsewhere); a script whose data is missing is reported and skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["core.py", "scale.py", "defects.py", "forecast.py", "fraud.py", "chatbot.py", "codegen.py", "codegen_speed.py", "serve.py"]


def main() -> None:
    failed = []
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)], cwd=HERE).returncode != 0:
            failed.append(script)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
