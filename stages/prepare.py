"""DVC stage `prepare`: a thin entry point; `segbench prepare --help` lists its arguments."""

import sys

from segbench.commands.prepare import main

if __name__ == "__main__":
    main(sys.argv[1:])
