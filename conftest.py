"""Pytest root: puts the repository on sys.path and runs MindSpore on CPU."""
import os

os.environ.setdefault("GLOG_v", "3")  # silence MindSpore's C++ INFO/WARNING logs in test output
