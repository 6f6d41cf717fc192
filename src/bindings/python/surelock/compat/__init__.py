"""Drop-in shims: change one import to move from pymutex or filelock to surelock."""
