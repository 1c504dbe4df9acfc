import sys

from knlab.app.cli import main

sys.exit(main())
