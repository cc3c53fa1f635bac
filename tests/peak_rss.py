"""Run a command and print its peak resident memory: ``python tests/peak_rss.py CMD ...`` -> last line
``PEAK_KIB <n> EXIT <code>``; the command's stderr passes through.

Why a launcher: Linux keeps a process's ``ru_maxrss`` across fork and exec, so a child forked straight from a
large pytest process reports the parent's size (measured: 5.3 GiB for a 1 GiB run). This script's own process
is small once Python has started, so its child's figure is the child's.
"""
import os
import subprocess
import sys


def main(argv):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    print(f"PEAK_KIB {usage.ru_maxrss} EXIT {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
