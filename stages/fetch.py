"""DVC stage `fetch`: a thin entry point; `segbench fetch --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["fetch", *sys.argv[1:]])
