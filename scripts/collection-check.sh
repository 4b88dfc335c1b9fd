#!/usr/bin/env bash
# Build the photosync.fleet collection and check it the way Ansible reviewers and users do:
#   1. `make collection` (scripts/build-collection.py) builds the tarball;
#   2. ansible-galaxy installs that tarball into a scratch collections path;
#   3. `ansible-test sanity` and `ansible-test units` run on the installed copy (sanity: every
#      test that runs offline);
#   4. `ansible-doc` renders each module by FQCN, and a playbook resolves by FQCN.
# Usage: scripts/collection-check.sh        (what `make test`'s collection stage runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_DEPRECATION_WARNINGS=False PYTHONWARNINGS=ignore

python scripts/build-collection.py
version=$(python -c 'import photo_sync; print(photo_sync.__version__)')
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
ANSIBLE_COLLECTIONS_PATH="$scratch" ansible-galaxy collection install --offline --no-deps -p "$scratch" \
    "build/photosync-fleet-$version.tar.gz" >/dev/null
installed="$scratch/ansible_collections/photosync/fleet"

# ansible-test fetches a get-pip script for each venv it makes; offline, the stand-in does
# its job (scripts/ansible-test-get-pip.py says how).
pip_version=$(python - <<'PY'
import re, ansible_test, pathlib
source = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", source).group(1))
PY
)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -s "$cache" ]; then
    mkdir -p "$(dirname "$cache")"
    cp scripts/ansible-test-get-pip.py "$cache"
fi

python_version=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
(cd "$installed" && ansible-test sanity --color no --requirements --python "$python_version" \
    --venv --skip-test shellcheck)
# The modules' unit tests (collection/tests/unit), in ansible-test's own venv: no photo_sync
# there, as on a controller without the store's venv.
(cd "$installed" && ansible-test units --color no --requirements --python "$python_version" \
    --venv)

modules=$(cd library && ls ./*.py | sed 's|^\./||; s|\.py$||')
for module in $modules; do
    (cd "$scratch" && ANSIBLE_COLLECTIONS_PATH="$scratch" ansible-doc "photosync.fleet.$module" \
        >/dev/null)
done
playbooks=$(cd playbooks && ls ./*.yml | sed 's|^\./||; s|\.yml$||; s|-|_|g')
for playbook in $playbooks; do
    # From a scratch directory: nothing of the tree's ansible.cfg or roles/ helps it resolve.
    (cd "$scratch" && ANSIBLE_COLLECTIONS_PATH="$scratch" ansible-playbook --syntax-check \
        -i localhost, "photosync.fleet.$playbook" >/dev/null 2>"$scratch/syntax.log") \
        || { cat "$scratch/syntax.log" >&2; echo "collection-check: photosync.fleet.$playbook" \
             "does not load from the collection" >&2; exit 1; }
done
echo "collection-check: photosync.fleet $version: sanity clean, units pass;" \
     "$(echo "$modules" | wc -w) modules render and $(echo "$playbooks" | wc -w) playbooks load by FQCN"
