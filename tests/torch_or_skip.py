"""torch_or_skip.py - torch for a test script run by whichever python3 CMake found: Debian's
python3-torch lives with /usr/bin/python3, so the script is run again under it; without torch
the test reports skipped (exit 77), never passed."""
import os
import sys


def torch_or_skip(script):
    try:
        import torch
        return torch
    except ImportError:
        if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        print(f"{script}: SKIPPED: python3-torch is not installed")
        sys.exit(77)
