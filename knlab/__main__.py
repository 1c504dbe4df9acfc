import sys

from knlab.cli import main

sys.exit(main())
