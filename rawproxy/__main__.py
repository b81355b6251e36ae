"""python -m rawproxy"""

import sys

from .service.run import main

if __name__ == "__main__":
    sys.exit(main())
