"""A stand-in for the get-pip script ansible-test downloads before each sanity test's venv.

ansible-test bootstraps pip in every venv it makes by downloading get-pip-<version>.py,
unless ~/.ansible/test/cache/get_pip_<version>.py exists. On a machine without that
download (a store-side CI runner, this project's CI), scripts/collection-check.sh puts this
file there. It does what get-pip does with what the interpreter has: pip from the
standard library's ensurepip, then the packages ansible-test asked for from the pip index
this machine is configured with. The venv keeps ensurepip's pip in place of the pinned
one, and says so; ansible-test's tests run with either.
"""

from __future__ import annotations

import ensurepip
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    ensurepip.bootstrap(upgrade=True)
    # get-pip's own pip pin: ensurepip's pip stands in for it (asking the index for it
    # offline only costs pip's retries).
    pinned = [arg for arg in args if arg.startswith("pip==")]
    if pinned:
        print("ansible-test-get-pip: %s stands in for %s" % (ensurepip.version(), pinned[0]))
    args = [arg for arg in args if arg not in pinned]
    if not [arg for arg in args if not arg.startswith("-")]:
        return 0
    return subprocess.run([sys.executable, "-m", "pip", "install",
                           "--disable-pip-version-check", *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
