"""Render the test member alpha through coophost's own path, for converge.yml.

The member file is parsed by coophost's registry parser, turned into the role's variables by
`unit_vars` and written by `render_host_file` (the host vars template), exactly as coophost
renders a real host: the template-safety test then checks what coophost writes, not a
hand-written `!unsafe`. Secrets are left out (converge.yml gives the test keys and hashes).

usage: render_member.py OUT_FILE   (the name's lookup would touch $MOLECULE_EPHEMERAL_DIRECTORY/
coophost-templated, were it ever templated on the controller)
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from coophost.desired.render import SecretRef, render_host_file, unit_vars
from coophost.fsutil import atomic_write
from coophost.registry.catalogue import load_catalogue
from coophost.registry.model import Host
from coophost.registry.parse import parse_coop, parse_member


def alpha_name(ephemeral: str) -> str:
    """A member name that runs a command on the controller if Ansible ever templates it."""
    return "{{ lookup('pipe', 'touch " + ephemeral + "/coophost-templated') }}"


def refuse(ref: SecretRef) -> str:
    """No secret is rendered here."""
    raise AssertionError(f"unexpected secret {ref.key}")


def main(out: Path) -> None:
    """Write the rendered host vars of the test host, with alpha's unit."""
    catalogue = load_catalogue()
    coop = parse_coop({"name": "Molecule Co-op", "domain": "mol.test",
                       "contacts": ["admin@mol.test"],
                       "vault": {"password_env": "UNUSED"}}, "coop.yml", catalogue)
    member = parse_member({
        "slug": "alpha", "id": "a1a1a1a1a1a1",
        "name": alpha_name(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]),
        "contact": "a@alpha.test", "status": "active",
        "domains": ["alpha.test", "alpha-alt.test"],
        "services": {"mail": {"mailboxes": ["ana", "bo"], "quota_mb": 100, "spam_filter": True,
                              "aliases": {"team": ["ana", "bo"],
                                          "outside": ["someone@example.net"]}}},
    }, "members/alpha.yml", "alpha", coop, catalogue)
    unit = {**unit_vars(member, catalogue.services["mail"]), "secrets": {}}
    host = Host(name="mail", fqdn="mail.mol.test", address="mail.mol.test", groups=("mail",),
                capacity={})
    atomic_write(out, render_host_file(host=host, coop=coop, units={"mail": [unit]},
                                       service_names=catalogue.services,
                                       host_hash_value="molecule", vault=refuse))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
