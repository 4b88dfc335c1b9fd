# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options the photo_sync modules share (module_utils/photo_sync_common.py's
DATABASE_ARGS and HO_ARGS), documented once.

In the working tree a module names these as C(photo_sync.database) and C(photo_sync.ho)
(ansible.cfg's doc_fragment_plugins); `make collection` rewrites them to
C(photosync.fleet.photo_sync.*)."""

from __future__ import annotations


class ModuleDocFragment:

    # DATABASE_ARGS: where the store database and the agent's settings are.
    DATABASE = r"""
options:
  config:
    description:
      - Path on the target of the agent's settings file (KEY=VALUE, C(PHOTO_SYNC_EDGE_*)).
      - Options given to the module override it.
    type: path
  database_url:
    description:
      - libpq URL of the store database, e.g. C(postgresql:///edge?host=/var/run/postgresql).
      - Taken from I(config) (C(PHOTO_SYNC_EDGE_DATABASE_URL)) when not given.
      - Passed as a module option, it never appears on a command line or in the log.
    type: str
requirements:
  - the photo_sync package (the photo-sync venv)
"""

    # HO_ARGS: how the store reaches head office and proves who it is.
    HO = r"""
options:
  ho_url:
    description: Base URL of the head-office sync API, e.g. C(https://ho.example:8443).
    type: str
  store_id:
    description: This store's UUID as registered at head office.
    type: str
  store_secret:
    description: This store's secret at head office.
    type: str
  timeout:
    description: HTTP timeout in seconds.
    type: float
  retries:
    description: Retries of a failing HTTP request before the task gives up.
    type: int
  ca_bundle:
    description:
      - Path on the target of a PEM file with the CA that signed head office's certificate
        (C(PHOTO_SYNC_EDGE_CA_BUNDLE)); the system's CAs when not given.
    type: path
  allow_http:
    description:
      - Permit C(http://) to a head office that is not on a loopback address
        (C(PHOTO_SYNC_EDGE_ALLOW_HTTP)); without it such an I(ho_url) fails the task.
    type: bool
"""
