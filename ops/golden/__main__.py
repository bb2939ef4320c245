import sys

from ops.golden.build import main

sys.exit(main())
