"""Who may use the console: the ALB's signed token, session cookies, CSRF, the one-time token."""

from __future__ import annotations

import time

import pytest

from service.console.oidc import role_of, token_header, verify_alb_token
from service.console.session import LoginToken, Principal, Sessions
from service.errors import ConsoleAuthError
from tests.console_support import ALB_ARN, ISSUER, AlbSigner

SIGNER = AlbSigner()


def verify(token: str, signer: AlbSigner = SIGNER, **checks: str) -> dict[str, object]:
    return verify_alb_token(
        token,
        signer.public_pem,
        now=time.time(),
        signer=checks.get("signer", ALB_ARN),
        issuer=checks.get("issuer", ISSUER),
    )


def test_a_token_signed_by_the_alb_gives_its_claims() -> None:
    claims = verify(SIGNER.token(groups=["tideway-operators"]))
    assert claims["sub"] == "alice"
    assert claims["cognito:groups"] == ["tideway-operators"]


def test_a_token_signed_with_another_key_is_refused_for_its_signature() -> None:
    with pytest.raises(ConsoleAuthError, match="bad signature"):
        verify(AlbSigner().token(), SIGNER)


def test_a_token_whose_payload_was_edited_is_refused() -> None:
    head, _, rest = SIGNER.token(sub="alice").partition(".")
    other = AlbSigner().token(sub="mallory").split(".")[1]
    forged = f"{head}.{other}.{rest.partition('.')[2]}"
    with pytest.raises(ConsoleAuthError, match="bad signature"):
        verify(forged)


def test_an_expired_token_is_refused() -> None:
    with pytest.raises(ConsoleAuthError, match="expired"):
        verify(SIGNER.token(ttl=-60))


def test_a_token_from_another_load_balancer_is_refused() -> None:
    token = SIGNER.token(signer=ALB_ARN.replace("tideway", "someone-else"))
    with pytest.raises(ConsoleAuthError, match=r"signer .* is not our ALB"):
        verify(token)


def test_a_token_of_another_issuer_is_refused() -> None:
    with pytest.raises(ConsoleAuthError, match="issuer"):
        verify(SIGNER.token(issuer="https://evil.example"))


def test_the_signer_and_issuer_are_checked_only_when_configured() -> None:
    token = SIGNER.token(signer="arn:other", issuer="https://other")
    claims = verify_alb_token(token, SIGNER.public_pem, now=time.time())
    assert claims["sub"] == "alice"


def test_a_kid_that_is_not_a_key_id_is_refused_before_any_key_fetch() -> None:
    with pytest.raises(ConsoleAuthError, match="kid"):
        token_header(SIGNER.token(kid="../../evil.example/x"))


def test_a_token_that_is_not_es256_is_refused() -> None:
    import jwt

    token = jwt.encode({"sub": "x", "exp": time.time() + 60}, "s" * 32, algorithm="HS256")
    with pytest.raises(ConsoleAuthError, match="not ES256"):
        token_header(token)


def test_operators_are_the_members_of_the_configured_group_and_everyone_else_views() -> None:
    claim, group = "cognito:groups", "tideway-operators"
    assert role_of({claim: ["readers", "tideway-operators"]}, claim, group) == "operator"
    assert role_of({claim: "[readers, tideway-operators]"}, claim, group) == "operator"
    assert role_of({claim: ["readers"]}, claim, group) == "viewer"
    assert role_of({claim: "tideway-operators-not"}, claim, group) == "viewer"
    assert role_of({}, claim, group) == "viewer"


def test_a_session_cookie_names_its_principal_until_it_expires() -> None:
    sessions = Sessions(b"k" * 32)
    cookie = sessions.issue(Principal("local", "operator"), now=1000.0)
    assert sessions.read(cookie, now=1001.0) == Principal("local", "operator")
    assert sessions.read(cookie, now=1000.0 + 13 * 3600) is None


def test_a_cookie_edited_to_claim_operator_rights_is_ignored() -> None:
    sessions = Sessions(b"k" * 32)
    body, _, mac = sessions.issue(Principal("local", "viewer"), now=1000.0).partition(".")
    forged_body = sessions.issue(Principal("local", "operator"), now=1000.0).partition(".")[0]
    assert sessions.read(f"{forged_body}.{mac}", now=1001.0) is None
    assert Sessions(b"x" * 32).read(f"{body}.{mac}", now=1001.0) is None
    assert sessions.read("garbage", now=1001.0) is None


def test_the_csrf_token_belongs_to_one_principal() -> None:
    sessions = Sessions(b"k" * 32)
    alice, bob = Principal("alice", "operator"), Principal("bob", "operator")
    assert sessions.csrf_ok(alice, sessions.csrf_token(alice))
    assert not sessions.csrf_ok(alice, sessions.csrf_token(bob))
    assert not sessions.csrf_ok(alice, None)
    assert not sessions.csrf_ok(alice, "")


def test_the_sign_in_token_works_once() -> None:
    login = LoginToken("t0k3n")
    assert not login.redeem("wrong")
    assert login.redeem("t0k3n")
    assert not login.redeem("t0k3n")
    assert login.pending is None


def test_a_key_url_without_the_kid_is_a_one_line_setting_error() -> None:
    from service.errors import SettingsError
    from service.settings import Settings

    with pytest.raises(SettingsError) as bad:
        Settings.load(None, stream="s", bucket="bbb", console_oidc_key_url="https://keys.example/")
    assert str(bad.value) == (
        "setting TIDEWAY_CONSOLE_OIDC_KEY_URL is invalid: must contain {kid} (the ALB's key id)"
    )
    with pytest.raises(SettingsError, match="TIDEWAY_CONSOLE_BASE_PATH"):
        Settings.load(None, stream="s", bucket="bbb", console_base_path="console/")
