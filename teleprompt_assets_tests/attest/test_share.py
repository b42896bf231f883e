import json

from teleprompt_assets.attest.bundles import build_bundle
from teleprompt_assets.attest.share import compact, decode_share_string, share_string, share_url
from teleprompt_assets_tests.attest.test_bundles import EVIDENCE, KEY, SIGNER


def test_share_string_round_trips_the_compact_package():
    att = json.loads(build_bundle(EVIDENCE, KEY)["attestation.json"])
    encoded = share_string(att, SIGNER)
    assert decode_share_string(encoded) == compact(att, SIGNER)
    unpacked = decode_share_string(encoded)
    assert unpacked[7] == att["uid"] and unpacked[6] == SIGNER and unpacked[9] == "0" and unpacked[12] == "0"
    assert share_url(att, SIGNER).startswith("https://sepolia.easscan.org/offchain/url/#attestation=")
