"""matplotlib stays optional: cnnzoo imports without it, training's end-of-run hook says once how
to get the pictures, and the drawing commands fail with the install hint instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cnnzoo.viz import INSTALL_HINT

# Run in a fresh interpreter where `import matplotlib` fails, as if it were not installed.
WITHOUT_MATPLOTLIB = "import sys; sys.modules['matplotlib'] = None\n"


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_importing_cnnzoo_does_not_import_matplotlib():
    done = python("""
        import sys
        import cnnzoo, cnnzoo.viz
        from cnnzoo.cli.main import build_parser
        build_parser()
        assert 'matplotlib' not in sys.modules, 'matplotlib was imported'
    """)
    assert done.returncode == 0, done.stderr


def test_without_matplotlib_end_of_run_logs_once_and_returns_nothing(tmp_path):
    done = python(WITHOUT_MATPLOTLIB + f"""
import logging
from cnnzoo import viz
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
assert not viz.has_matplotlib()
assert viz.end_of_run({str(tmp_path)!r}) == []
assert viz.end_of_run({str(tmp_path)!r}) == []
""")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cnnzoo[viz]") == 1, done.stderr


def test_without_matplotlib_the_commands_give_the_install_hint(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    done = python(WITHOUT_MATPLOTLIB + f"""
import sys
from cnnzoo.cli.main import main
sys.exit(main(["plot", {str(tmp_path)!r}]))
""")
    assert done.returncode == 2
    assert INSTALL_HINT.split()[1] in done.stderr and "Traceback" not in done.stderr
