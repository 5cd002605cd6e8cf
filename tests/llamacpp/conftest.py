"""This folder is opt-in: `make test-llamacpp` sets PROMPTGATE_LLAMACPP=1. Without it, `make test`
(testpaths = tests) does not even collect it: it needs a llama-cpp-python build (minutes) and runs
for many more minutes on a CPU."""

import os

collect_ignore_glob = [] if os.environ.get("PROMPTGATE_LLAMACPP") == "1" else ["test_*.py"]
