import sys

from imageprism.cli import main

sys.exit(main())
