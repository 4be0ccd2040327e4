"""A module whose import never finishes in time: a zygote preloading it stays "starting".

It writes the importing process's pid to ``$ZYGOTE_TEST_MARKER`` first, for the test to wait on.
"""

import os
import time

with open(os.environ["ZYGOTE_TEST_MARKER"] + ".tmp", "w") as marker:
    marker.write(str(os.getpid()))
os.replace(os.environ["ZYGOTE_TEST_MARKER"] + ".tmp", os.environ["ZYGOTE_TEST_MARKER"])
time.sleep(120)
