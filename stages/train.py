"""DVC stage `train`: a thin entry point; `segbench train --help` lists its arguments."""

import sys

from segbench.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
