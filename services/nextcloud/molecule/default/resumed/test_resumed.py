"""Third phase: beta active again; its instance answers again, nothing was lost."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ncmol import get, preflight, unit_dir


def test_a_resumed_members_vhost_answers_again(host):
    status, report = preflight(host, "beta")
    assert status == 200, report
    assert report["ok"] is True and report["pool_user"] == "nc-beta"
    status, _, body = get(host, "https://cloud.beta.test/prepared.html")
    assert status == 200 and "being prepared" in body


def test_a_resumed_members_data_is_still_there(host):
    assert host.file(f"{unit_dir('beta')}/data/molecule-secret.txt").content_string == \
        "beta-only\n"
