"""`python -m choreoscope` runs the console command."""

import sys

from choreoscope.cli import main

sys.exit(main())
