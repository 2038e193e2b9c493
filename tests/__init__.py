"""The suite. Imported before any test module or conftest, so the setting below reaches every native library and every
process a test starts.

Two xdist workers share two cores: a native thread pool per process (OpenMP in scikit-learn's histogram boosting,
BLAS in numpy) oversubscribes them, and OpenMP's idle threads spin while they wait. One thread each took the whole
suite from 1,415 to 1,083 worker-seconds (the public-kinds tests from 204 s to 73 s); a value set outside is kept."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
