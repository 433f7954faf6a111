"""An application module that fails to import (the test of a bad --app)."""
raise ImportError("this module needs a package that is not installed")
