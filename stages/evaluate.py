"""DVC stage `evaluate`: a thin entry point; `segbench evaluate --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
