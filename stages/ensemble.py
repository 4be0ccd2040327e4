"""DVC stage `ensemble`: a thin entry point; `segbench ensemble --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["ensemble", *sys.argv[1:]])
