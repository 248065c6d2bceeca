"""``python -m mesh_ctl``: same as the ``mesh_ctl`` console script."""

import sys

from mesh_ctl.cli import main

if __name__ == "__main__":  # not when a "spawn" child process imports it (mesh_ctl.xds.parsing)
    sys.exit(main())
