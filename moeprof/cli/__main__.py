import sys

from moeprof.cli import main

sys.exit(main())
