import sys

from actorproxy.cli import main

sys.exit(main())
