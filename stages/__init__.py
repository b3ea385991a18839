"""DVC stage scripts (``python -m stages.<name>``): read params, call zs3core, write outputs atomically."""
import os
import sys

# Under `dvc repro` the output is no terminal: redraw progress bars every 15 s instead of
# several times a second, so logs stay readable (tqdm reads TQDM_* defaults at import time).
if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_MININTERVAL", "15")
# Under torchrun only rank 0 shows progress bars (zs3core/distributed.py); the other ranks
# compute silently (their errors still reach stderr).
if os.environ.get("RANK", "0") != "0":
    os.environ["TQDM_DISABLE"] = "1"
