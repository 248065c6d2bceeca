"""``python -m mesh_ctl``: same as the ``mesh_ctl`` console script."""

import sys

from mesh_ctl.cli import main

sys.exit(main())
