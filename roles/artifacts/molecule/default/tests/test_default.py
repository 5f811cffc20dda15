"""The mirror serves the store's artifact read only over HTTPS, and a host fetches it back."""

ARTIFACT = "coophost molecule artifact"
URL = "https://mirror.mol.test/artifacts/demo/1.0/demo-1.0.tar.gz"
CA = "/etc/letsencrypt/live/mirror.mol.test/fullchain.pem"


def test_the_artifact_is_served_as_stored(host):
    served = host.file("/srv/coophost/artifacts/demo/1.0/demo-1.0.tar.gz")
    assert served.user == "root" and served.mode == 0o644
    assert served.content_string == ARTIFACT
    got = host.run(f"curl -sS --fail --cacert {CA} {URL}")
    assert got.rc == 0, got.stderr
    assert got.stdout == ARTIFACT


def test_the_mirror_is_read_only_and_lists_nothing(host):
    put = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {CA} -X PUT "
                   f"--data x {URL}")
    assert put.stdout == "403"
    listing = host.run("curl -s -o /dev/null -w '%{http_code}' "
                       f"--cacert {CA} https://mirror.mol.test/artifacts/demo/1.0/")
    assert listing.stdout in ("403", "404")


def test_what_the_store_no_longer_lists_is_removed(host):
    assert not host.file("/srv/coophost/artifacts/old").exists


def test_the_host_fetched_it_through_get(host):
    got = host.file("/root/got/demo-1.0.tar.gz")
    assert got.exists and got.content_string == ARTIFACT
