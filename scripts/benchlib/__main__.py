import sys

from benchlib.main import main

sys.exit(main())
