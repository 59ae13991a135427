"""Identity from the IdP, with a real OpenID provider (node oidc-provider) issuing
the tokens: signature, issuer, audience and expiry are checked against its
discovery document and JWKS; the groups claim becomes the principal's groups (and
so its document scope); roles come from a claim or from groups. SCIM provisioning
deprovisions users and narrows groups on the next cache refresh."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from carafe.adapters.local import LocalEngine
from carafe.config import load_config
from carafe.gateway import admin_keys, scim
from carafe.gateway.deps import resolve
from carafe.gateway.errors import install_error_handlers
from carafe.gateway.retrieval import Retriever, scope_of
from carafe.gateway.state import AppState, build_state
from carafe.indexer.config import SourceConfig
from tests.state.services import AUDIENCE, IdP, oidc_provider

SCIM_TOKEN = "scim-secret-token"


@pytest.fixture
def gateway(idp: IdP, tmp_path) -> Iterator[tuple[TestClient, AppState]]:  # type: ignore[no-untyped-def]
    """The gateway's auth, admin-keys and SCIM routes on a fresh state database (no model)."""
    cfg = load_config(
        None,
        data_dir=tmp_path / "data",
        auth={
            "oidc": {"issuer": idp.issuer, "audience": AUDIENCE, "role_groups": {"auditor": ["audit-team"]}},
            "scim_token": SCIM_TOKEN,
        },
        state={"cache_ttl_s": 0.2},
    )
    state = build_state(cfg, engine=LocalEngine(cfg.adapters.engine, models_dir=cfg.models_dir))
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(admin_keys.router)
    app.include_router(scim.router)
    app.state.carafe = state
    yield TestClient(app), state
    state.store.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_idp_token_gives_the_user_groups_and_roles(gateway, idp: IdP) -> None:  # type: ignore[no-untyped-def]
    client, state = gateway
    hana = resolve(state, idp.token("hana", ["hr", "employees", "audit-team"]))
    assert hana is not None and hana.user == "hana" and set(hana.groups) == {"hr", "employees", "audit-team"}
    assert hana.roles == ("auditor",) and hana.key_id.startswith("oidc:")  # role from group membership
    assert scope_of(hana).groups == set(hana.groups)  # what retrieval filters documents by
    admin = idp.token("root", [], roles=["admin", "superuser"])
    assert client.get("/admin/keys", headers=_bearer(admin)).status_code == 200  # role from the roles claim
    denied = client.get("/admin/keys", headers=_bearer(idp.token("hana", ["hr"])))
    assert denied.status_code == 403


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["finance"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_forged_foreign_wrong_audience_and_unsigned_tokens_are_refused(gateway, idp: IdP) -> None:  # type: ignore[no-untyped-def]
    client, _ = gateway
    good = idp.token("hana", ["hr"])
    other_aud = httpx.post(
        f"{idp.issuer}/token",
        data={"grant_type": "client_credentials", "resource": "urn:someone:else", "test_user": "hana"},
        auth=("carafe-tests", "carafe-tests-secret"),
    ).json()["access_token"]
    unsigned_claims = base64.urlsafe_b64encode(json.dumps({"sub": "x", "iss": idp.issuer, "aud": AUDIENCE,
                                                           "exp": time.time() + 600}).encode())  # fmt: skip
    unsigned = "eyJhbGciOiJub25lIn0." + unsigned_claims.rstrip(b"=").decode() + "."
    with oidc_provider() as impostor:  # another provider: same audience, its own keys and issuer
        foreign = impostor.token("hana", ["hr"])
    for bad in (_tamper(good), other_aud, foreign, unsigned):
        r = client.get("/admin/keys", headers=_bearer(bad))
        assert r.status_code == 401, r.text
    assert "audience" in client.get("/admin/keys", headers=_bearer(other_aud)).json()["error"]["message"].lower()


def test_expired_token_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with oidc_provider(ttl_s=1) as short:
        cfg = load_config(
            None, data_dir=tmp_path / "d", auth={"oidc": {"issuer": short.issuer, "audience": AUDIENCE, "leeway_s": 0}}
        )
        state = build_state(cfg, engine=LocalEngine(cfg.adapters.engine, models_dir=cfg.models_dir))
        token = short.token("hana", ["hr"])
        time.sleep(2.1)  # the token's lifetime is 1 s
        from carafe.errors import Unauthenticated

        with pytest.raises(Unauthenticated, match="expired"):
            resolve(state, token)
        state.store.close()


def _scim(client: TestClient, method: str, path: str, body: dict | None = None) -> httpx.Response:  # type: ignore[type-arg]
    return client.request(method, f"/scim/v2{path}", json=body, headers=_bearer(SCIM_TOKEN))


def _until(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not seen within the cache TTL"
        time.sleep(0.05)


def test_scim_deprovisioning_and_group_removal_take_access_away(gateway, idp: IdP) -> None:  # type: ignore[no-untyped-def]
    client, state = gateway
    assert client.get("/scim/v2/Users").status_code == 401  # bearer-protected
    user = _scim(client, "POST", "/Users", {"userName": "hana", "active": True, "externalId": "e-1"})
    assert user.status_code == 201 and user.headers["content-type"].startswith("application/scim+json")
    uid = user.json()["id"]
    assert _scim(client, "POST", "/Users", {"userName": "hana"}).status_code == 409
    group = _scim(client, "POST", "/Groups", {"displayName": "hr", "members": [{"value": uid}]}).json()
    listed = _scim(client, "GET", '/Users?filter=userName eq "hana"').json()
    assert listed["totalResults"] == 1 and listed["Resources"][0]["groups"] == [{"display": "hr"}]

    token = idp.token("hana", ["hr", "finance"])  # the token still claims finance: the directory decides
    key, _ = state.keys.create("hana", groups=["hr", "legal"])
    _until(lambda: resolve(state, token).groups == ("hr",))  # type: ignore[union-attr]
    assert resolve(state, key).groups == ("hr",)  # type: ignore[union-attr]

    remove = {"Operations": [{"op": "remove", "path": f'members[value eq "{uid}"]'}]}
    assert _scim(client, "PATCH", f"/Groups/{group['id']}", remove).status_code == 200
    _until(lambda: resolve(state, token).groups == ())  # type: ignore[union-attr]
    assert resolve(state, key).groups == ()  # type: ignore[union-attr]

    off = {"Operations": [{"op": "replace", "path": "active", "value": False}]}
    assert _scim(client, "PATCH", f"/Users/{uid}", off).json()["active"] is False
    _until(lambda: resolve(state, token) is None and resolve(state, key) is None)
    r = client.get("/admin/keys", headers=_bearer(token))
    assert r.status_code == 401 and "deprovisioned" in r.json()["error"]["message"]
    assert _scim(client, "DELETE", f"/Users/{uid}").status_code == 204
    assert _scim(client, "GET", f"/Users/{uid}").status_code == 404


async def test_a_removed_group_member_loses_the_groups_documents(
    gateway,
    idp,
    make_index,
    real_embedder,
    small_policies,
):  # type: ignore[no-untyped-def]
    """Groups from the IdP decide what retrieval returns; SCIM removing the member takes
    the HR documents away (the token still says hr) once the cache TTL passed."""
    client, state = gateway
    index = make_index(SourceConfig(name="policies", path=small_policies))
    index.sync()
    retriever = Retriever(state.config, real_embedder, index=index)
    uid = _scim(client, "POST", "/Users", {"userName": "hana"}).json()["id"]
    hr = _scim(client, "POST", "/Groups", {"displayName": "hr", "members": [{"value": uid}]}).json()
    token = idp.token("hana", ["hr"])
    question = "What are the salary bands for engineers?"
    _until(lambda: resolve(state, token).groups == ("hr",))  # type: ignore[union-attr]
    before = await retriever.retrieve(question, resolve(state, token), top_k=3)  # type: ignore[arg-type]
    assert before and before[0].doc_id == "policies:hr/salary-bands-2026.md"
    remove = {"Operations": [{"op": "remove", "path": "members", "value": [{"value": uid}]}]}
    assert _scim(client, "PATCH", f"/Groups/{hr['id']}", remove).status_code == 200
    _until(lambda: resolve(state, token).groups == ())  # type: ignore[union-attr]
    after = await retriever.retrieve(question, resolve(state, token), top_k=3)  # type: ignore[arg-type]
    assert all(not p.doc_id.startswith("policies:hr/") for p in after)
