import sys

from pyproxy.main import main

sys.exit(main())
