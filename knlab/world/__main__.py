"""``python -m knlab.world ...``: the organisms' command under the name it always had (it lives in
``knlab.organisms``, which builds on the world; the world itself is data only)."""

import sys

from knlab.organisms.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
