"""DVC stage `evaluate`: a thin entry point; `segbench evaluate --help` lists its arguments."""

import sys

from segbench.commands.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])
