"""tornado-hps: a high-performance asynchronous web server on Tornado."""
from pathlib import Path

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = PROJECT_ROOT / "templates"
STATIC_PATH = PROJECT_ROOT / "static"
