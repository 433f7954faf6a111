"""python -m server --port 8888: parse the settings and run the server until it is stopped."""
import sys

from .lifecycle import main

if __name__ == "__main__":
    sys.exit(main())
