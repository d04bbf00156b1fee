import sys

from meshbot.app.cli import main

sys.exit(main())
