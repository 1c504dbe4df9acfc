import sys

from knlab.app.cli import main

if __name__ == "__main__":  # not when a spawned process (paper --jobs) imports it
    sys.exit(main())
