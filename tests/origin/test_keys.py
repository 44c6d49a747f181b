"""Encrypted assets end to end, short of a browser: `cdlc ingest --encryption`
writes CMAF common encryption with a key from the key store (never the object
store), ffmpeg decodes the published segments with that key only, the manifests
point at the key routes, and the key routes hand keys (raw for HLS, a W3C ClearKey
license for EME) to a valid playback token for that asset only. The CPIX key
provider reads a hand-written CPIX document, from a file and over HTTP.

HLS AES-128 (engine/segment_crypto.py): whole segments under AES-128-CBC, the IV
the media sequence number; openssl and ffmpeg's HLS client (through the origin's
key route) decrypt them, the decrypted bytes are the clear copy's, byte for byte,
each I-frame byte range decrypts alone, and DASH is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin

import pytest
from aiohttp.test_utils import TestClient

from cdn.tokens import sign, sign_for
from engine.pipeline import Services, ingest
from engine.segment_crypto import (
    decrypt_segment,
    encrypt_segment,
    iframe_range_end,
    sequence_iv,
)
from metadata import open_cache, open_objects, open_store
from metadata.jobs import JobRequest, RequestError
from metadata.keys import (
    AES_128,
    ContentKey,
    CpixError,
    CpixKeyProvider,
    LocalKeyProvider,
    SQLiteKeyStore,
    get_or_create,
    open_key_store,
    parse_cpix,
)
from metadata.models import Segment
from origin.app import OriginDeps, create_app
from origin.keys import add_key_routes, b64url
from tests.conftest import CdlcEnv, make_env
from tests.media import ffmpeg

SIGNING = b"keys-test-signing-key"
SCYLLA = os.environ.get("CDLC_TEST_SCYLLA", "")
SEGMENT = "2"

# A hand-written CPIX 2.3 document (DASH-IF CPIX §5): two keys, one with an
# explicit IV, and a PSSH box for Widevine for the first.
CPIX_KID = bytes.fromhex("5d1f3c6a9b8e4d2f8a7c6b5e4d3c2b1a")
CPIX_KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90")
CPIX_KID2 = bytes.fromhex("00112233445566778899aabbccddeeff")
CPIX_KEY2 = bytes.fromhex("ffeeddccbbaa99887766554433221100")
CPIX_IV2 = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")
WIDEVINE = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"
PSSH = base64.b64encode(b"\x00\x00\x00\x20pssh" + b"\x00" * 24).decode()


def _uuid(kid: bytes) -> str:
    h = kid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


CPIX = f"""<?xml version="1.0" encoding="UTF-8"?>
<cpix:CPIX xmlns:cpix="urn:dashif:org:cpix" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
           contentId="film-1" version="2.3">
  <cpix:ContentKeyList>
    <cpix:ContentKey kid="{_uuid(CPIX_KID)}" commonEncryptionScheme="cenc">
      <cpix:Data><pskc:Secret>
        <pskc:PlainValue>{base64.b64encode(CPIX_KEY).decode()}</pskc:PlainValue>
      </pskc:Secret></cpix:Data>
    </cpix:ContentKey>
    <cpix:ContentKey kid="{_uuid(CPIX_KID2)}" commonEncryptionScheme="cbcs"
                     explicitIV="{base64.b64encode(CPIX_IV2).decode()}">
      <cpix:Data><pskc:Secret>
        <pskc:PlainValue>{base64.b64encode(CPIX_KEY2).decode()}</pskc:PlainValue>
      </pskc:Secret></cpix:Data>
    </cpix:ContentKey>
  </cpix:ContentKeyList>
  <cpix:DRMSystemList>
    <cpix:DRMSystem kid="{_uuid(CPIX_KID)}" systemId="{WIDEVINE}">
      <cpix:PSSH>{PSSH}</cpix:PSSH>
    </cpix:DRMSystem>
  </cpix:DRMSystemList>
</cpix:CPIX>
""".encode()


@dataclass
class Ingested:
    env: CdlcEnv
    master: Path
    keys: dict[str, list[ContentKey]]

    @property
    def data(self) -> Path:
        return self.env.data_dir

    @property
    def objects(self) -> Path:
        return self.data / "objects"

    def joined(self, asset_id: str, rendition: str) -> Path:
        """init.mp4 and every N.m4s of a published rendition, as one fMP4 file."""
        folder = self.objects / "media" / asset_id / rendition
        count = len(list(folder.glob("*.m4s")))
        assert count >= 2
        out = self.data / f"{asset_id}-{rendition}.mp4"
        out.write_bytes((folder / "init.mp4").read_bytes() + b"".join(
            (folder / f"{n}.m4s").read_bytes() for n in range(1, count + 1)))
        return out

    def segments(self, asset_id: str, rendition: str) -> list[Segment]:
        async def read() -> list[Segment]:
            store = open_store("", self.data)
            try:
                return await store.get_segments(asset_id, rendition)
            finally:
                await store.close()
        return asyncio.run(read())

    def key(self, asset_id: str) -> ContentKey:
        found = self.keys.get(asset_id, [])
        assert len(found) == 1
        return found[0]


def _stored_keys(data: Path, asset_ids: list[str]) -> dict[str, list[ContentKey]]:
    async def read() -> dict[str, list[ContentKey]]:
        store = open_key_store("", data)
        try:
            return {a: await store.for_asset(a) for a in asset_ids}
        finally:
            await store.close()
    return asyncio.run(read())


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """One data dir, ingests through the real CLI: `enc` (transcode, cenc),
    `copyenc` (package-only, cenc), `copyclear` (package-only, clear), `cbcs`
    (package-only, cbcs); and through the engine's ingest (the application layer
    the CLI calls): `aes` (package-only, aes-128) and `aestx` (transcode,
    aes-128)."""
    root = tmp_path_factory.mktemp("keys")
    master = root / "master.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4",
           "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000:duration=4",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(master))
    env = make_env(root / "data", CDLC_PRESET="ultrafast")
    for asset_id, extra in (("enc", ["--ladder", "240:300", "--encryption", "cenc"]),
                            ("copyenc", ["--copy", "--encryption", "cenc"]),
                            ("copyclear", ["--copy"]),
                            ("cbcs", ["--copy", "--encryption", "cbcs"])):
        proc = env.run("ingest", str(master), "--id", asset_id, "--segment-seconds", SEGMENT,
                       "--json", *extra, timeout=120)
        assert proc.returncode == 0, proc.stderr
    asyncio.run(_ingest_aes128(env.data_dir, master))
    ids = ["enc", "copyenc", "copyclear", "cbcs", *AES_ASSETS]
    return Ingested(env, master, _stored_keys(env.data_dir, ids))


AES_ASSETS = ("aes", "aestx")


async def _ingest_aes128(data: Path, master: Path) -> None:
    store, objects = open_store("", data), open_objects("", data)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=data / "work")
    try:
        await ingest(services, "aes", master,
                     JobRequest(copy=True, segment_seconds=float(SEGMENT), encryption="aes-128"))
        await ingest(services, "aestx", master,
                     JobRequest(ladder="240:300", segment_seconds=float(SEGMENT),
                                preset="ultrafast", encryption="aes-128"))
    finally:
        await store.close()
        await objects.close()


def decode(path: Path, key: bytes | None) -> tuple[int, str, str]:
    """(exit code, stderr, md5 of the decoded frames) as ffmpeg decodes the file."""
    args = ["ffmpeg", "-hide_banner", "-v", "error"]
    if key is not None:
        args += ["-decryption_key", key.hex()]
    args += ["-i", str(path), "-f", "md5", "-"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr, proc.stdout.strip()


# -- the ingest ---------------------------------------------------------------------

@pytest.mark.parametrize("asset_id", ["enc", "copyenc", "cbcs"])
def test_encrypted_segments_decode_with_the_key_only(ingested: Ingested, asset_id: str) -> None:
    key = ingested.key(asset_id)
    assert key.scheme == ("cbcs" if asset_id == "cbcs" else "cenc")
    for rendition in ("v240", "audio"):
        joined = ingested.joined(asset_id, rendition)
        rc, err, with_key = decode(joined, key.key)
        assert rc == 0 and err == "", err
        rc, err, without = decode(joined, None)
        assert rc != 0 or err != "", f"{asset_id}/{rendition} decoded cleanly without the key"
        assert without != with_key
        rc, err, wrong = decode(joined, hashlib.md5(b"not the key").digest())
        assert rc != 0 or err != "" or wrong != with_key
        if asset_id != "enc":
            # A copy keeps the master's samples: decrypted, they are the clear
            # copy's, frame for frame.
            rc, err, clear = decode(ingested.joined("copyclear", rendition), None)
            assert rc == 0 and clear == with_key


def test_the_key_is_in_the_metadata_store_not_the_object_store(ingested: Ingested) -> None:
    files = [p for p in ingested.objects.rglob("*") if p.is_file()]
    assert files
    blob = b"".join(p.read_bytes() for p in files)
    for asset_id in ("enc", "copyenc", "cbcs"):
        key = ingested.key(asset_id)
        assert key.key not in blob, f"the key of {asset_id} is in the object store"
        # The scan is not blind: the KID (tenc, pssh) is in the init segments.
        assert key.kid in blob
        init = (ingested.objects / "media" / asset_id / "v240" / "init.mp4").read_bytes()
        assert key.kid in init and key.key not in init
    for asset_id in AES_ASSETS:
        # AES-128: the KID only names the key in the playlists' key URI.
        key = ingested.key(asset_id)
        assert key.key not in blob and key.kid not in blob
    # Where it is: the content_keys table of metadata.db.
    import sqlite3

    conn = sqlite3.connect(ingested.data / "metadata.db")
    try:
        rows = conn.execute("SELECT asset_id, kid, key FROM content_keys").fetchall()
    finally:
        conn.close()
    held = {a: (bytes.fromhex(kid), bytes.fromhex(k)) for a, kid, k in rows}
    assert set(held) == {"enc", "copyenc", "cbcs", *AES_ASSETS}
    assert held["enc"] == (ingested.key("enc").kid, ingested.key("enc").key)
    assert held["aes"] == (ingested.key("aes").kid, ingested.key("aes").key)
    assert len({k for _, k in held.values()}) == 5  # one key per asset


async def test_renditions_are_marked_with_scheme_and_kid(ingested: Ingested) -> None:
    store = open_store("", ingested.data)
    try:
        for asset_id, scheme in (("enc", "cenc"), ("cbcs", "cbcs"), ("copyclear", ""),
                                 ("aes", "aes-128"), ("aestx", "aes-128")):
            rends = await store.get_renditions(asset_id)
            assert {r.id for r in rends} == {"v240", "audio", "storyboard"}
            keys = ingested.keys[asset_id]
            kid = keys[0].kid.hex() if keys else ""
            media = [r for r in rends if r.kind != "image"]
            assert all((r.encryption, r.key_id) == (scheme, kid) for r in media), rends
            # Previews stay clear, as players' preview code expects plain JPEGs.
            (board,) = [r for r in rends if r.kind == "image"]
            assert (board.encryption, board.key_id) == ("", "")
    finally:
        await store.close()


def test_encryption_option_is_checked(ingested: Ingested) -> None:
    proc = ingested.env.run("ingest", str(ingested.master), "--id", "bad",
                            "--encryption", "aes-256")
    assert proc.returncode == 2 and "aes-256" in proc.stderr
    assert JobRequest.parse({"encryption": "CENC"}).encryption == "cenc"
    assert JobRequest.parse({"encryption": ""}).encryption == ""
    assert JobRequest.parse({"encryption": " AES-128 "}).encryption == "aes-128"
    with pytest.raises(RequestError, match="use cenc, cbcs or aes-128"):
        JobRequest.parse({"encryption": "aes-256"})
    with pytest.raises(RequestError, match="unknown encryption 'rot13'"):
        JobRequest.parse({"encryption": "rot13"})
    assert "encryption" in JobRequest.REMOTE_FIELDS
    req = JobRequest(encryption="cbcs")
    assert JobRequest.from_json(req.to_json()) == req
    # A record written before the field existed reads as clear.
    assert JobRequest.from_json('{"preset":"fast"}').encryption == ""


# -- the key routes -----------------------------------------------------------------

@pytest.fixture
async def client(ingested: Ingested, aiohttp_client: Any) -> TestClient[Any, Any]:
    deps = OriginDeps(store=open_store("", ingested.data),
                      objects=open_objects("", ingested.data), cache=open_cache(""),
                      signing_key=SIGNING, close_backends=True)
    # create_app installs the key routes over the key store beside the metadata
    # store the origin already has.
    app = create_app(deps)
    return await aiohttp_client(app)  # type: ignore[no-any-return]


async def test_raw_key_needs_a_token_for_that_asset(client: TestClient[Any, Any],
                                                    ingested: Ingested) -> None:
    key = ingested.key("enc")
    path = f"/keys/enc/{key.kid.hex()}"
    for query in ("", "?token=", "?token=garbage",
                  f"?token={sign_for(SIGNING, 'copyenc', 60)}",         # another asset
                  f"?token={sign(SIGNING, 'enc', int(time.time()) - 5)}",  # expired
                  f"?token={sign_for(b'another-key', 'enc', 60)}"):     # another signer
        resp = await client.get(path + query)
        assert resp.status == 403, query
        assert key.key not in await resp.read()
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    token = sign_for(SIGNING, "enc", 60)
    resp = await client.get(f"{path}?token={token}")
    assert resp.status == 200
    assert await resp.read() == key.key
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    # The UUID spelling of the KID names the same key.
    h = key.kid.hex()
    resp = await client.get(f"/keys/enc/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                            f"?token={token}")
    assert resp.status == 200 and await resp.read() == key.key
    # A KID of another asset, with this asset's token: not found (not its key).
    other = ingested.key("copyenc").kid.hex()
    assert (await client.get(f"/keys/enc/{other}?token={token}")).status == 404
    assert (await client.get(f"/keys/enc/{'0' * 32}?token={token}")).status == 404
    # A token bound to another client address.
    bound = sign_for(SIGNING, "enc", 60, client_ip="10.9.8.7")
    assert (await client.get(f"{path}?token={bound}")).status == 403
    preflight = await client.options(path, headers={
        "Origin": "http://player.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status == 204
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


async def test_clearkey_license_is_the_w3c_json(client: TestClient[Any, Any],
                                                ingested: Ingested) -> None:
    key = ingested.key("enc")
    token = sign_for(SIGNING, "enc", 60)
    url = f"/keys/enc/clearkey?token={token}"
    # What Chromium's ClearKey CDM sends (EME §9.1.3).
    request = {"kids": [b64url(key.kid)], "type": "temporary"}
    resp = await client.post(url, data=json.dumps(request).encode(),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    doc = await resp.json()
    assert doc == {"keys": [{"kty": "oct", "kid": b64url(key.kid), "k": b64url(key.key)}],
                   "type": "temporary"}
    # base64url without padding (JWK), decoding back to the 16 bytes.
    k = doc["keys"][0]
    assert "=" not in k["k"] + k["kid"] and "+" not in k["k"] and "/" not in k["k"]
    assert base64.urlsafe_b64decode(k["k"] + "==") == key.key
    # No kids (or GET): every key of the asset; the raw route's ?format=clearkey.
    for resp in (await client.post(url), await client.get(url),
                 await client.get(f"/keys/enc/{key.kid.hex()}?token={token}&format=clearkey")):
        assert resp.status == 200
        assert await resp.json() == doc
    # A KID the asset does not have, and bad requests.
    stranger = {"kids": [b64url(b"\x01" * 16)], "type": "temporary"}
    assert (await client.post(url, data=json.dumps(stranger))).status == 404
    for bad in (b"{", b'{"kids": "abc"}', b'{"kids": ["not base64!"]}', b"\xff\xfe"):
        assert (await client.post(url, data=bad)).status == 400, bad
    assert (await client.post(url, data=b"x" * 20_000)).status == 413
    # No token, or another asset's: 403, no key in the body.
    for query in ("", f"?token={sign_for(SIGNING, 'cbcs', 60)}"):
        resp = await client.post(f"/keys/enc/clearkey{query}", data=json.dumps(request))
        assert resp.status == 403
        assert b64url(key.key) not in await resp.text()
    preflight = await client.options(url, headers={
        "Origin": "http://player.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]


async def test_no_signing_key_serves_no_key(ingested: Ingested, aiohttp_client: Any) -> None:
    deps = OriginDeps(store=open_store("", ingested.data),
                      objects=open_objects("", ingested.data), cache=open_cache(""),
                      close_backends=True)
    app = create_app(deps)  # no signing key: its key routes refuse every request
    client = await aiohttp_client(app)
    kid = ingested.key("enc").kid.hex()
    assert (await client.get(f"/keys/enc/{kid}")).status == 403
    assert (await client.get(f"/keys/enc/{kid}?token={sign_for(SIGNING, 'enc', 60)}")
            ).status == 403
    assert (await client.post("/keys/enc/clearkey")).status == 403


async def test_manifests_point_at_the_key_routes(client: TestClient[Any, Any],
                                                 ingested: Ingested) -> None:
    key = ingested.key("enc")
    token = sign_for(SIGNING, "enc", 60)
    playlist_url = f"/vod/enc/v240/media.m3u8?token={token}"
    resp = await client.get(playlist_url)
    assert resp.status == 200
    text = await resp.text()
    tags = [line for line in text.splitlines() if line.startswith("#EXT-X-KEY:")]
    assert tags == [f'#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,URI="/keys/enc/{key.kid.hex()}'
                    f'?token={token}",KEYFORMAT="identity",KEYFORMATVERSIONS="1",'
                    f"KEYID=0x{key.kid.hex()}"]
    # The I-frame playlist carries the same key tag, before its EXT-X-MAP too.
    iframes = await (await client.get(f"/vod/enc/v240/iframes.m3u8?token={token}")).text()
    lines = iframes.splitlines()
    assert [n for n in lines if n.startswith("#EXT-X-KEY:")] == tags
    assert lines.index(tags[0]) + 1 == lines.index(f'#EXT-X-MAP:URI="init.mp4?token={token}"')
    cbcs_token = sign_for(SIGNING, "cbcs", 60)
    for name in ("media.m3u8", "iframes.m3u8"):
        text = await (await client.get(f"/vod/cbcs/v240/{name}?token={cbcs_token}")).text()
        assert text.count(f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="/keys/cbcs/'
                          f'{ingested.key("cbcs").kid.hex()}?token={cbcs_token}"') == 1, name
    # A player resolves the URI against the playlist (RFC 3986 §5.2) and gets the key.
    uri = tags[0].split('URI="', 1)[1].split('"', 1)[0]
    resolved = urljoin(str(client.make_url(playlist_url)), uri)
    got = await client.session.get(resolved)
    assert got.status == 200 and await got.read() == key.key
    # A clear asset's playlist has no key tag.
    clear = await client.get(f"/vod/copyclear/v240/media.m3u8?token="
                             f"{sign_for(SIGNING, 'copyclear', 60)}")
    assert "#EXT-X-KEY" not in await clear.text()
    cbcs = await client.get(f"/vod/cbcs/audio/media.m3u8?token={sign_for(SIGNING, 'cbcs', 60)}")
    assert "#EXT-X-KEY:METHOD=SAMPLE-AES," in await cbcs.text()

    mpd = await (await client.get(f"/vod/enc/manifest.mpd?token={token}")).text()
    h = key.kid.hex()
    assert (f'cenc:default_KID="{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"') in mpd
    assert 'schemeIdUri="urn:uuid:e2719d58-a985-b3c9-781a-b030af78d30e"' in mpd
    assert f">/keys/enc/clearkey?token={token}</dashif:Laurl>" in mpd
    assert mpd.count("<dashif:Laurl") == 2  # the video and the audio AdaptationSet
    clear_mpd = await (await client.get(
        f"/vod/copyclear/manifest.mpd?token={sign_for(SIGNING, 'copyclear', 60)}")).text()
    assert "ContentProtection" not in clear_mpd


# -- the key store and providers ----------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("scylla", marks=[
    pytest.mark.scylla,
    pytest.mark.skipif(not SCYLLA, reason="CDLC_TEST_SCYLLA names no ScyllaDB cluster")])])
def metadata_url(request: pytest.FixtureRequest) -> str:
    return "" if request.param == "sqlite" else SCYLLA


async def test_get_or_create_is_one_key_per_asset_and_scheme(tmp_path: Path,
                                                             metadata_url: str) -> None:
    """The KeyStore contract, on every backend: two stores (two processes) racing
    for an asset's first key get the same one; keys outlive the store object."""
    a, b = open_key_store(metadata_url, tmp_path), open_key_store(metadata_url, tmp_path)
    x = f"x{uuid.uuid4().hex[:12]}"
    try:
        first, second = await asyncio.gather(get_or_create(a, x, "cenc"),
                                             get_or_create(b, x, "cenc"))
        assert first == second
        assert await get_or_create(a, x, "cenc") == first
        other = await get_or_create(a, x, "cbcs")
        assert other.kid != first.kid and other.key != first.key
        assert await b.get(x, first.kid) == first
        assert await b.get(x + "y", first.kid) is None
        assert [k.scheme for k in await a.for_asset(x)] == ["cenc", "cbcs"]
        pssh = ContentKey(asset_id=x + "p", scheme="cenc", kid=CPIX_KID, key=CPIX_KEY,
                          iv=CPIX_IV2, pssh={WIDEVINE: PSSH}, created_at=1.0)
        assert await a.add(pssh) == pssh
        await a.close()
        a = open_key_store(metadata_url, tmp_path)  # a restart
        assert await a.get(x + "p", CPIX_KID) == pssh
        assert await a.get(x, other.kid) == other
        aes = await get_or_create(b, x, AES_128)  # HLS AES-128: a key of its own
        assert aes.iv == b"" and aes.kid not in (first.kid, other.kid)
        assert await get_or_create(a, x, AES_128) == aes
        assert await a.delete_asset(x) == 3
        assert await b.for_asset(x) == []
        with pytest.raises(ValueError, match="unknown encryption scheme 'aes-256'"):
            await get_or_create(a, x, "aes-256")
        await a.ping()
    finally:
        await a.close()
        await b.close()


async def test_local_keys_are_random() -> None:
    keys = [await LocalKeyProvider().new_key("x", "cenc") for _ in range(8)]
    assert len({k.key for k in keys}) == 8 and len({k.kid for k in keys}) == 8
    assert all(len(k.key) == 16 and len(k.kid) == 16 for k in keys)


def test_cpix_document_gives_kid_key_iv_and_pssh() -> None:
    first, second = parse_cpix(CPIX, "film", "hand.cpix")
    assert (first.scheme, first.kid, first.key, first.iv) == ("cenc", CPIX_KID, CPIX_KEY, b"")
    assert first.pssh == {WIDEVINE: PSSH}
    assert (second.scheme, second.kid, second.key, second.iv) == \
        ("cbcs", CPIX_KID2, CPIX_KEY2, CPIX_IV2)
    assert second.pssh == {}


@pytest.mark.parametrize(("doc", "says"), [
    (b"not xml", "not XML"),
    (b"<a/>", "not a CPIX document"),
    (CPIX.replace(b"PlainValue", b"EncryptedValue"), "encrypted"),
    (CPIX.replace(_uuid(CPIX_KID).encode(), b"nope", 1), "bad kid"),
    (CPIX.replace(base64.b64encode(CPIX_KEY), b"!!!!", 1), "not base64"),
    (CPIX.replace(base64.b64encode(CPIX_KEY), base64.b64encode(b"short"), 1), "16 bytes"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>' + CPIX[39:], "DOCTYPE"),
    (b'<cpix:CPIX xmlns:cpix="urn:dashif:org:cpix"/>', "no ContentKey"),
])
def test_bad_cpix_documents_are_refused(doc: bytes, says: str) -> None:
    with pytest.raises(CpixError, match=says):
        parse_cpix(doc, "film", "bad.cpix")


class _CpixServer(http.server.BaseHTTPRequestHandler):
    """A key server on loopback: GET /cpix/{asset} answers the CPIX document."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _CpixServer.asked.append(self.path)
        if not self.path.startswith("/cpix/"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(CPIX)))
        self.end_headers()
        self.wfile.write(CPIX)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def cpix_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CpixServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cpix/{{asset}}"
    finally:
        server.shutdown()
        server.server_close()


async def test_cpix_provider_from_a_file_and_a_key_server(tmp_path: Path, cpix_url: str) -> None:
    path = tmp_path / "keys.cpix"
    path.write_bytes(CPIX)
    key = await CpixKeyProvider(path).new_key("film", "cbcs")
    assert (key.kid, key.key, key.iv) == (CPIX_KID2, CPIX_KEY2, CPIX_IV2)
    store = SQLiteKeyStore(tmp_path / "metadata.db")
    try:
        got = await get_or_create(store, "film7", "cenc", CpixKeyProvider(cpix_url))
        assert (got.kid, got.key, got.pssh) == (CPIX_KID, CPIX_KEY, {WIDEVINE: PSSH})
        assert "/cpix/film7" in _CpixServer.asked
        # Stored: read back with its PSSH, and not asked of the server again.
        asked = len(_CpixServer.asked)
        assert await get_or_create(store, "film7", "cenc", CpixKeyProvider(cpix_url)) == got
        assert len(_CpixServer.asked) == asked
    finally:
        await store.close()
    with pytest.raises(CpixError, match="cannot read"):
        await CpixKeyProvider(tmp_path / "missing.cpix").new_key("film", "cenc")
    with pytest.raises(CpixError, match="no ContentKey for scheme cbcs"):
        (tmp_path / "one.cpix").write_bytes(CPIX.split(b"<cpix:ContentKey kid=\"0011")[0]
                                            + b"</cpix:ContentKeyList></cpix:CPIX>")
        await CpixKeyProvider(tmp_path / "one.cpix").new_key("film", "cbcs")


async def test_an_ingest_encrypts_with_the_cpix_key(ingested: Ingested, tmp_path: Path) -> None:
    """The engine's pipeline with a CPIX key provider: the published media decrypt
    with the key server's key, which the key store now holds."""
    path = tmp_path / "keys.cpix"
    path.write_bytes(CPIX)
    store, objects = open_store("", tmp_path), open_objects("", tmp_path)
    services = Services(store=store, objects=objects, cache=open_cache(""),
                        work_dir=tmp_path / "work", key_provider=CpixKeyProvider(path))
    try:
        await ingest(services, "cpixed", ingested.master,
                     JobRequest(copy=True, segment_seconds=2.0, encryption="cenc"))
        rends = await store.get_renditions("cpixed")
        media = [r for r in rends if r.kind != "image"]
        assert {(r.encryption, r.key_id) for r in media} == {("cenc", CPIX_KID.hex())}
    finally:
        await store.close()
        await objects.close()
    key_store = open_key_store("", tmp_path)
    keys = await key_store.for_asset("cpixed")
    await key_store.close()
    assert [(k.kid, k.key) for k in keys] == [(CPIX_KID, CPIX_KEY)]
    folder = tmp_path / "objects" / "media" / "cpixed" / "v240"
    joined = tmp_path / "cpixed.mp4"
    joined.write_bytes((folder / "init.mp4").read_bytes() + b"".join(
        (folder / f"{n}.m4s").read_bytes() for n in (1, 2)))
    rc, err, _ = decode(joined, CPIX_KEY)
    assert rc == 0 and err == "", err
    rc, err, _ = decode(joined, None)
    assert rc != 0 or err != ""


async def test_a_key_store_that_is_out_is_a_503(ingested: Ingested,
                                                aiohttp_client: Any) -> None:
    deps = OriginDeps(store=open_store("", ingested.data),
                      objects=open_objects("", ingested.data), cache=open_cache(""),
                      signing_key=SIGNING, close_backends=True, key_routes=False)
    app = create_app(deps)
    keys = SQLiteKeyStore(ingested.data / "metadata.db")
    await keys.close()  # its thread is gone: every read fails
    add_key_routes(app, keys, SIGNING)
    client = await aiohttp_client(app)
    token = sign_for(SIGNING, "enc", 60)
    for resp in (await client.get(f"/keys/enc/{ingested.key('enc').kid.hex()}?token={token}"),
                 await client.post(f"/keys/enc/clearkey?token={token}")):
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["Cache-Control"] == "no-store"


# -- HLS AES-128 (whole segments) ---------------------------------------------------

def _frames(path: Path, stream: str = "v") -> tuple[int, str, list[str]]:
    """(exit code, stderr, the MD5 of each decoded frame of the first video, or
    with ``stream="a"`` audio, stream) as ffmpeg decodes the file."""
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-i", str(path),
                           "-map", f"0:{stream}:0", "-f", "framemd5", "-"],
                          capture_output=True, text=True, timeout=120)
    frames = [line.rsplit(",", 1)[-1].strip() for line in proc.stdout.splitlines()
              if line and not line.startswith("#")]
    return proc.returncode, proc.stderr, frames


def test_segment_cipher_is_aes_128_cbc_with_pkcs7() -> None:
    key, iv = bytes(range(16)), sequence_iv(3)
    assert iv == bytes(15) + b"\x02"  # segment 3 is media sequence number 2 (§5.2)
    for n in (0, 1, 15, 16, 17, 4099):
        clear = os.urandom(n)
        sealed = encrypt_segment(clear, key, iv)
        assert len(sealed) == (n // 16 + 1) * 16  # PKCS#7: always 1..16 bytes of pad
        assert decrypt_segment(sealed, key, iv) == clear
        # openssl's own AES-128-CBC and PKCS#7 read it the same.
        proc = subprocess.run(["openssl", "enc", "-d", "-aes-128-cbc", "-K", key.hex(),
                               "-iv", iv.hex()], input=sealed, capture_output=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout == clear
    sealed = encrypt_segment(b"x" * 40, key, iv)
    with pytest.raises(ValueError, match="padding"):
        decrypt_segment(sealed, hashlib.md5(b"not the key").digest(), iv)
    with pytest.raises(ValueError, match="whole number of AES blocks"):
        decrypt_segment(sealed[:-1], key, iv)
    with pytest.raises(ValueError, match="start at 1"):
        sequence_iv(0)


def test_iframe_ranges_are_complete_aes_128_messages() -> None:
    import random

    rng = random.Random(8216)
    key, iv = bytes(range(16)), sequence_iv(1)
    for _ in range(300):
        clear = rng.randbytes(rng.randint(1, 30_000))
        iframe = rng.randint(1, len(clear))
        end = iframe_range_end(clear, iframe)
        sealed = encrypt_segment(clear, key, iv)
        assert end % 16 == 0 and end <= len(sealed)
        # The range alone decrypts (valid padding) to a prefix holding the I-frame.
        part = decrypt_segment(sealed[:end], key, iv)
        assert clear.startswith(part) and len(part) >= iframe
    # A pad exactly past the I-frame: the range ends there.
    assert iframe_range_end(b"A" * 31 + b"\x01" + b"B" * 100, 20) == 32
    # A pad that would cut into the I-frame is no end; none left: the whole segment.
    assert iframe_range_end(b"A" * 31 + b"\x01" + b"B" * 100, 32) == 144
    for bad in (0, 133):
        with pytest.raises(ValueError, match="outside"):
            iframe_range_end(b"A" * 132, bad)


def test_aes128_segments_decrypt_to_the_clear_copy(ingested: Ingested) -> None:
    key = ingested.key("aes")
    assert key.scheme == AES_128 and key.iv == b""
    for rendition in ("v240", "audio"):
        folder = ingested.objects / "media" / "aes" / rendition
        clear_folder = ingested.objects / "media" / "copyclear" / rendition
        # The init segment stays clear (EXT-X-MAP comes before EXT-X-KEY).
        assert (folder / "init.mp4").read_bytes() == (clear_folder / "init.mp4").read_bytes()
        segs, clear_segs = (ingested.segments("aes", rendition),
                            ingested.segments("copyclear", rendition))
        assert len(segs) == len(clear_segs) >= 2
        for s, c in zip(segs, clear_segs, strict=True):
            sealed = (folder / f"{s.number}.m4s").read_bytes()
            clear = (clear_folder / f"{c.number}.m4s").read_bytes()
            assert s.size == len(sealed) == (len(clear) // 16 + 1) * 16
            assert decrypt_segment(sealed, key.key, sequence_iv(s.number)) == clear
            assert b"moof" not in sealed[:64]  # no box to read without the key
        # ffmpeg finds no sample in the raw segments (an init segment, then no box it
        # knows); decrypted, they decode as the clear copy.
        stream = "v" if rendition == "v240" else "a"
        rc, err, frames = _frames(ingested.joined("aes", rendition), stream)
        assert frames == [], f"aes/{rendition} decoded without the key"
        clear_frames = _frames(ingested.joined("copyclear", rendition), stream)[2]
        assert len(clear_frames) > 50
        decrypted = ingested.data / f"aes-{rendition}-clear.mp4"
        decrypted.write_bytes((folder / "init.mp4").read_bytes() + b"".join(
            decrypt_segment((folder / f"{s.number}.m4s").read_bytes(), key.key,
                            sequence_iv(s.number)) for s in segs))
        rc, err, got = decode(decrypted, None)
        assert rc == 0 and err == "", err
        assert got == decode(ingested.joined("copyclear", rendition), None)[2]
        assert _frames(decrypted, stream)[2] == clear_frames


def test_aes128_transcode_decrypts_and_decodes(ingested: Ingested) -> None:
    key = ingested.key("aestx")
    folder = ingested.objects / "media" / "aestx" / "v240"
    segs = ingested.segments("aestx", "v240")
    init = (folder / "init.mp4").read_bytes()
    first = (folder / "1.m4s").read_bytes()
    (ingested.data / "aestx-raw.mp4").write_bytes(init + first)
    rc, err, frames = _frames(ingested.data / "aestx-raw.mp4")
    assert (rc != 0 or err != "") and frames == []
    clear = b"".join(decrypt_segment((folder / f"{s.number}.m4s").read_bytes(), key.key,
                                     sequence_iv(s.number)) for s in segs)
    (ingested.data / "aestx-clear.mp4").write_bytes(init + clear)
    rc, err, frames = _frames(ingested.data / "aestx-clear.mp4")
    assert rc == 0 and err == "" and len(frames) == 100  # 4 s at 25 fps
    # Segment 1's IV is 0 (media sequence number 0): with segment 2's (1), the
    # first block comes out XORed with that difference (CBC), the rest the same.
    right = decrypt_segment(first, key.key, sequence_iv(1))
    wrong = decrypt_segment(first, key.key, sequence_iv(2))
    assert right[4:8] == b"styp" and right == clear[:len(right)]
    assert wrong[:15] == right[:15] and wrong[15] == right[15] ^ 1 and wrong[16:] == right[16:]


def test_aes128_iframe_ranges_decrypt_alone(ingested: Ingested) -> None:
    key = ingested.key("aes")
    folder = ingested.objects / "media" / "aes" / "v240"
    clear_folder = ingested.objects / "media" / "copyclear" / "v240"
    init = (folder / "init.mp4").read_bytes()
    for s, c in zip(ingested.segments("aes", "v240"), ingested.segments("copyclear", "v240"),
                    strict=True):
        assert s.iframe_size % 16 == 0 and c.iframe_size <= s.iframe_size <= s.size
        sealed = (folder / f"{s.number}.m4s").read_bytes()
        # The range, as a player fetches it (EXT-X-BYTERANGE), with the segment's IV.
        part = decrypt_segment(sealed[:s.iframe_size], key.key, sequence_iv(s.number))
        clear = (clear_folder / f"{c.number}.m4s").read_bytes()
        assert clear.startswith(part) and len(part) >= c.iframe_size
        (ingested.data / "iframe.mp4").write_bytes(init + part)
        whole = ingested.data / "whole.mp4"
        whole.write_bytes(init + clear)
        # Its first picture is the segment's first picture.
        assert _frames(ingested.data / "iframe.mp4")[2][:1] == _frames(whole)[2][:1] != []


async def test_aes128_playlists_key_route_and_no_mpd(client: TestClient[Any, Any],
                                                     ingested: Ingested) -> None:
    key = ingested.key("aes")
    token = sign_for(SIGNING, "aes", 60)
    tag = f'#EXT-X-KEY:METHOD=AES-128,URI="/keys/aes/{key.kid.hex()}?token={token}"'
    for path in ("v240/media.m3u8", "v240/iframes.m3u8", "audio/media.m3u8"):
        resp = await client.get(f"/vod/aes/{path}?token={token}")
        assert resp.status == 200, path
        lines = (await resp.text()).splitlines()
        assert [n for n in lines if n.startswith("#EXT-X-KEY")] == [tag], path
        assert lines.index(tag) == lines.index(f'#EXT-X-MAP:URI="init.mp4?token={token}"') + 1
    # The key route: the 16 raw bytes to this asset's token only.
    key_path = f"/keys/aes/{key.kid.hex()}"
    for query in ("", f"?token={sign_for(SIGNING, 'copyclear', 60)}"):
        resp = await client.get(key_path + query)
        assert resp.status == 403 and key.key not in await resp.read()
    resp = await client.get(f"{key_path}?token={token}")
    assert resp.status == 200 and await resp.read() == key.key
    assert resp.headers["Cache-Control"] == "no-store"
    # DASH cannot signal whole-segment AES-128: no MPD, and a line saying why.
    resp = await client.get(f"/vod/aes/manifest.mpd?token={token}")
    assert resp.status == 404
    assert resp.headers["Cache-Control"] == "no-store"
    assert "HLS AES-128, which DASH cannot signal" in await resp.text()
    assert "/vod/aes/master.m3u8" in await resp.text()
    master = await client.get(f"/vod/aes/master.m3u8?token={token}")
    assert master.status == 200 and "#EXT-X-I-FRAME-STREAM-INF" in await master.text()
    # ffmpeg's HLS client through the origin: it resolves the key URI against the
    # playlist, fetches the key with the token, decrypts and decodes every frame
    # as the clear copy has them.
    url = str(client.make_url(f"/vod/aes/v240/media.m3u8?token={token}"))
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-v", "error", "-i", url, "-map", "0:v", "-f", "md5", "-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0 and err == b"", err
    clear = await asyncio.to_thread(decode, ingested.joined("copyclear", "v240"), None)
    assert out.decode().strip() == clear[2]


async def test_cpix_gives_aes128_the_key_without_a_scheme(tmp_path: Path) -> None:
    # CPIX's @commonEncryptionScheme names CENC schemes only: an HLS AES-128 key
    # is a ContentKey without one.
    path = tmp_path / "keys.cpix"
    path.write_bytes(CPIX.replace(b' commonEncryptionScheme="cenc"', b"", 1))
    key = await CpixKeyProvider(path).new_key("film", AES_128)
    assert (key.scheme, key.kid, key.key, key.iv) == (AES_128, CPIX_KID, CPIX_KEY, b"")
    # Every key of the hand-written document names its scheme: none for aes-128.
    path.write_bytes(CPIX)
    with pytest.raises(CpixError, match="no ContentKey for scheme aes-128"):
        await CpixKeyProvider(path).new_key("film", AES_128)
    # One IV for every segment is refused (each segment's is its sequence number).
    path.write_bytes(CPIX.replace(b' commonEncryptionScheme="cbcs"', b"", 1))
    with pytest.raises(CpixError, match="takes no explicit IV"):
        await CpixKeyProvider(path).new_key("film", AES_128)
