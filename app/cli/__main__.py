"""`python -m cms.app.cli`: how `cms up` starts its worker and scheduler children."""

import sys

from .main import main

sys.exit(main())
