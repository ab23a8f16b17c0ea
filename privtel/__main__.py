import sys

from privtel.cli import main

sys.exit(main())
