"""``python -m tests.rehearsal32 root|shell|go|packages|toolkit``."""

import sys

from tests.rehearsal32.root import main

sys.exit(main())
