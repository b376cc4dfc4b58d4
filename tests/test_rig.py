"""The rig itself, proven with the real client libraries: MSAL, imapclient and paho."""

from __future__ import annotations

import queue
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import msal
import paho.mqtt.client as mqtt
import pytest
import requests
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from rig.clients import confidential_client
from rig.dovecot import EXCHANGE_CAPABILITIES, Dovecot
from rig.idp import App, IdentityPlatform
from rig.mosquitto import Mosquitto
from rig.pki import ClientCert, TestPKI, make_client_certificate
from rig.samples import INVOICE, UMLAUTS, make_message

OUTLOOK_SCOPE = "https://outlook.office365.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def acquire(idp: IdentityPlatform, pki: TestPKI, app: App, credential: Any = None,
            scope: str = OUTLOOK_SCOPE) -> dict[str, Any]:
    """acquire_token_for_client's result dict for app (its first secret by default)."""
    client = confidential_client(idp, pki, app.tenant_id, app.client_id,
                                 credential if credential is not None else app.secrets[0])
    result: dict[str, Any] = client.acquire_token_for_client([scope])
    return result


def token_for(idp: IdentityPlatform, pki: TestPKI, app: App, scope: str = OUTLOOK_SCOPE) -> str:
    """An access token for app."""
    access_token: str = acquire(idp, pki, app, scope=scope)["access_token"]
    return access_token


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (as the bridge shows them)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def tls_context(pki: TestPKI) -> ssl.SSLContext:
    """A client TLS context trusting the test CA."""
    return ssl.create_default_context(cafile=str(pki.ca_file))


@pytest.fixture
def imap(dovecot: Dovecot, pki: TestPKI) -> Iterator[IMAPClient]:
    """An IMAP connection over implicit TLS, not logged in yet."""
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=True,
                        ssl_context=tls_context(pki), timeout=10)
    yield client
    try:
        client.logout()
    except Exception:
        client.shutdown()  # already gone is fine


@pytest.fixture
def session(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, imap: IMAPClient
) -> IMAPClient:
    """The imap connection, logged in to mailbox with app's token."""
    imap.oauth2_login(mailbox, token_for(idp, pki, app))
    return imap


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClientCert, ClientCert]:
    """Two client certificates: the first gets registered, the second is a stranger."""
    directory = tmp_path_factory.mktemp("certs")
    return make_client_certificate(directory, "app"), make_client_certificate(directory, "other")


# -- identity platform through MSAL ---------------------------------------------------------


def test_client_secret_gets_an_outlook_token_with_entra_claims(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    result = acquire(idp, pki, app)

    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3599
    claims = claims_of(result["access_token"])
    assert claims["aud"] == "https://outlook.office365.com"
    assert claims["iss"] == f"https://sts.windows.net/{app.tenant_id}/"
    assert claims["tid"] == app.tenant_id
    assert claims["appid"] == app.client_id
    assert claims["oid"] == app.service_principal_id
    assert claims["roles"] == ["IMAP.AccessAsApp"]
    assert claims["idtyp"] == "app"
    assert claims["exp"] - claims["iat"] == 3599
    assert idp.issued[-1] == claims


def test_wrong_client_secret_gives_aadsts7000215(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    result = acquire(idp, pki, app, credential="not-the-secret")

    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert "Invalid client secret provided" in result["error_description"]


def test_expired_client_secret_gives_aadsts7000222(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    secret = app.secrets[0]
    app.expire_secrets()

    result = acquire(idp, pki, app, credential=secret)

    assert result["error_codes"] == [7000222]


def test_unknown_app_gives_aadsts700016(idp: IdentityPlatform, pki: TestPKI, tenant: str) -> None:
    client = confidential_client(idp, pki, tenant, str(uuid.uuid4()), "secret")

    result = client.acquire_token_for_client([OUTLOOK_SCOPE])

    assert result["error"] == "unauthorized_client"
    assert result["error_codes"] == [700016]


def test_unknown_tenant_makes_msal_raise_value_error_naming_aadsts90002(
    idp: IdentityPlatform, pki: TestPKI
) -> None:
    with pytest.raises(ValueError, match="double check your tenant") as caught:
        confidential_client(idp, pki, str(uuid.uuid4()), str(uuid.uuid4()), "secret")

    assert "AADSTS90002" in str(caught.value.__context__)


def test_certificate_with_thumbprint_signs_rs256_and_gets_a_token(
    idp: IdentityPlatform, pki: TestPKI, tenant: str, certs: tuple[ClientCert, ClientCert]
) -> None:
    cert = certs[0]
    app = idp.register_app(tenant, certificates=[cert.cert_pem])
    credential = {"private_key": cert.key_file.read_text(),
                  "thumbprint": cert.sha1_thumbprint_hex}

    result = acquire(idp, pki, app, credential=credential)

    assert claims_of(result["access_token"])["appidacr"] == "2"
    assert [(h["alg"], str(h["x5t"]).rstrip("=")) for h in app.assertion_headers] == [
        ("RS256", cert.x5t)]


def test_certificate_with_public_certificate_signs_ps256_and_gets_a_token(
    idp: IdentityPlatform, pki: TestPKI, tenant: str, certs: tuple[ClientCert, ClientCert]
) -> None:
    cert = certs[0]
    app = idp.register_app(tenant, certificates=[cert.cert_pem])
    credential = {"private_key": cert.key_file.read_text(),
                  "public_certificate": cert.cert_pem.decode()}

    result = acquire(idp, pki, app, credential=credential)

    assert "access_token" in result
    # MSAL pads the thumbprint with '='
    assert [(h["alg"], str(h["x5t#S256"]).rstrip("=")) for h in app.assertion_headers] == [
        ("PS256", cert.x5t_s256)]


def test_unregistered_certificate_gives_aadsts700027(
    idp: IdentityPlatform, pki: TestPKI, tenant: str, certs: tuple[ClientCert, ClientCert]
) -> None:
    registered, stranger = certs
    app = idp.register_app(tenant, certificates=[registered.cert_pem])
    credential = {"private_key": stranger.key_file.read_text(),
                  "thumbprint": stranger.sha1_thumbprint_hex}

    result = acquire(idp, pki, app, credential=credential)

    assert result["error_codes"] == [700027]
    assert "not registered on application" in result["error_description"]


def test_registered_thumbprint_with_the_wrong_key_gives_invalid_signature(
    idp: IdentityPlatform, pki: TestPKI, tenant: str, certs: tuple[ClientCert, ClientCert]
) -> None:
    registered, stranger = certs
    app = idp.register_app(tenant, certificates=[registered.cert_pem])
    credential = {"private_key": stranger.key_file.read_text(),
                  "thumbprint": registered.sha1_thumbprint_hex}

    result = acquire(idp, pki, app, credential=credential)

    assert result["error_codes"] == [700027]
    assert "invalid signature" in result["error_description"]


def test_graph_scope_gives_a_token_for_graph(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    token = token_for(idp, pki, app, scope=GRAPH_SCOPE)

    assert claims_of(token)["aud"] == "https://graph.microsoft.com"


def test_scope_without_default_suffix_gives_aadsts1002012(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    result = acquire(idp, pki, app, scope="https://outlook.office365.com/IMAP.AccessAsApp")

    assert result["error"] == "invalid_scope"
    assert result["error_codes"] == [1002012]


def test_outage_makes_msal_raise_and_recovery_is_immediate(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    client = confidential_client(idp, pki, app.tenant_id, app.client_id, app.secrets[0])
    idp.down = True

    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        client.acquire_token_for_client([OUTLOOK_SCOPE])

    idp.down = False
    assert "access_token" in client.acquire_token_for_client([OUTLOOK_SCOPE])


def test_identity_platform_restarts_on_the_same_port(
    idp: IdentityPlatform, pki: TestPKI, app: App
) -> None:
    client = confidential_client(idp, pki, app.tenant_id, app.client_id, app.secrets[0])
    port = idp.port
    idp.stop()

    with pytest.raises(requests.ConnectionError):
        client.acquire_token_for_client([OUTLOOK_SCOPE])

    idp.start()
    assert idp.port == port
    assert "access_token" in client.acquire_token_for_client([OUTLOOK_SCOPE])


# -- Dovecot with XOAUTH2 -------------------------------------------------------------------


def test_granted_app_logs_in_with_xoauth2(
    idp: IdentityPlatform, mailbox: str, session: IMAPClient
) -> None:
    assert session.select_folder("INBOX")[b"EXISTS"] == 0
    assert idp.introspections[-1].mailbox == mailbox


def test_app_not_granted_the_mailbox_is_refused(
    idp: IdentityPlatform, pki: TestPKI, app: App, imap: IMAPClient
) -> None:
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.oauth2_login("someone-else@contoso.test", token_for(idp, pki, app))


def test_graph_token_is_refused(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, imap: IMAPClient
) -> None:
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.oauth2_login(mailbox, token_for(idp, pki, app, scope=GRAPH_SCOPE))


def test_token_without_the_imap_role_is_refused(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, imap: IMAPClient
) -> None:
    app.roles.clear()

    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.oauth2_login(mailbox, token_for(idp, pki, app))


def test_revoked_token_is_refused(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, imap: IMAPClient
) -> None:
    token = token_for(idp, pki, app)
    assert idp.revoke_all(app.client_id) == 1

    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.oauth2_login(mailbox, token)


def test_expired_token_is_refused(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, imap: IMAPClient
) -> None:
    idp.token_lifetime = 0  # exp == iat: expired as soon as it is issued

    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
        imap.oauth2_login(mailbox, token_for(idp, pki, app))
    assert "expired" in idp.introspections[-1].reason


def test_identity_platform_outage_gives_unavailable(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, imap: IMAPClient
) -> None:
    token = token_for(idp, pki, app)
    idp.down = True

    with pytest.raises(LoginError, match="UNAVAILABLE"):
        imap.oauth2_login(mailbox, token)


def test_starttls_login_works(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, dovecot: Dovecot
) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.starttls_port, ssl=False, timeout=10)
    client.starttls(tls_context(pki))

    client.oauth2_login(mailbox, token_for(idp, pki, app))

    assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client.logout()


def test_delivered_message_is_seen_after_select(
    mailbox: str, dovecot: Dovecot, session: IMAPClient
) -> None:
    uid = dovecot.deliver(mailbox, make_message(subject="Parcel"))

    assert session.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    fetched = session.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    assert fetched[uid][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() == b"Subject: Parcel"


def test_kick_ends_an_open_session(
    mailbox: str, dovecot: Dovecot, session: IMAPClient
) -> None:
    session.select_folder("INBOX")

    dovecot.kick(mailbox)

    with pytest.raises((session.AbortError, OSError)):
        session.noop()


def test_folder_helpers_see_flags_folders_and_special_use(
    mailbox: str, dovecot: Dovecot, session: IMAPClient
) -> None:
    dovecot.create_folder(mailbox, "Deleted Items")
    first = dovecot.deliver(mailbox, INVOICE, folder="INBOX/Receipts")
    second = dovecot.deliver(mailbox, UMLAUTS, folder="INBOX/Receipts",
                             flags=["\\Seen", "\\Flagged"])

    assert {"INBOX", "INBOX/Receipts", "Deleted Items"} <= set(dovecot.folders(mailbox))
    assert dovecot.uids(mailbox, "INBOX/Receipts") == [first, second]
    assert dovecot.flags(mailbox, "INBOX/Receipts") == {first: set(),
                                                        second: {"\\Seen", "\\Flagged"}}
    status = dovecot.status(mailbox, "INBOX/Receipts")
    assert (status["messages"], status["unseen"], status["uidnext"]) == (2, 1, second + 1)
    listed = {name: flags for flags, _, name in session.list_folders()}
    assert b"\\Trash" in listed["Deleted Items"]
    dovecot.set_uidvalidity(mailbox, "INBOX/Receipts", status["uidvalidity"] + 7)
    assert dovecot.status(mailbox, "INBOX/Receipts")["uidvalidity"] == status["uidvalidity"] + 7


def test_dovecot_restart_keeps_ports_and_mail(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, dovecot: Dovecot
) -> None:
    uid = dovecot.deliver(mailbox, make_message())
    port = dovecot.port

    dovecot.restart()

    assert dovecot.port == port
    assert dovecot.uids(mailbox) == [uid]
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=True,
                        ssl_context=tls_context(pki), timeout=10)
    client.oauth2_login(mailbox, token_for(idp, pki, app))
    client.logout()


def test_capabilities_override_hides_move_and_idle(
    idp: IdentityPlatform, pki: TestPKI, app: App, mailbox: str, tmp_path: Path
) -> None:
    plain = EXCHANGE_CAPABILITIES.replace(" MOVE", "").replace(" IDLE", "")
    with Dovecot(pki, idp.introspection_url, tmp_path, capabilities=plain) as server:
        client = IMAPClient(server.host, port=server.port, ssl=True,
                            ssl_context=tls_context(pki), timeout=10)
        client.oauth2_login(mailbox, token_for(idp, pki, app))

        capabilities = client.capabilities()
        client.logout()

    assert b"UIDPLUS" in capabilities
    assert b"MOVE" not in capabilities
    assert b"IDLE" not in capabilities
    assert b"CONDSTORE" not in capabilities


# -- Mosquitto ------------------------------------------------------------------------------


def mqtt_client(client_id: str) -> mqtt.Client:
    """A paho client with the current callback API."""
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)


def connect_result(
    host: str, port: int, *, username: str | None = None, password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> mqtt.ReasonCode:
    """The CONNACK reason code the broker on host:port gives this client."""
    done: queue.Queue[mqtt.ReasonCode] = queue.Queue()
    client = mqtt_client(f"rig-{uuid.uuid4().hex[:8]}")
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)
    client.on_connect = lambda _c, _u, _f, reason, _p: done.put(reason)
    client.connect(host, port)
    client.loop_start()
    try:
        return done.get(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


def test_paho_publish_and_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    topic = f"rig/{uuid.uuid4().hex}"
    received: queue.Queue[bytes] = queue.Queue()
    subscribed = threading.Event()
    client = mqtt_client(f"rig-{uuid.uuid4().hex[:8]}")
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, message: received.put(message.payload)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(30)

        client.publish(topic, b"hello", qos=1).wait_for_publish(30)

        assert received.get(timeout=30) == b"hello"
    finally:
        client.disconnect()
        client.loop_stop()


def test_broker_with_users_refuses_a_wrong_password(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, users={"bridge": "right"}) as broker:
        right = connect_result(broker.host, broker.port, username="bridge", password="right")
        wrong = connect_result(broker.host, broker.port, username="bridge", password="wrong")

    assert not right.is_failure
    assert wrong.is_failure


def test_broker_restart_keeps_its_port_and_persisted_retained_messages(tmp_path: Path) -> None:
    topic = f"rig/{uuid.uuid4().hex}"
    with Mosquitto(tmp_path, persistence=True) as broker:
        port = broker.port
        publish = mqtt_client(f"rig-{uuid.uuid4().hex[:8]}")
        publish.connect(broker.host, broker.port)
        publish.loop_start()
        publish.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(30)
        publish.disconnect()
        publish.loop_stop()

        broker.restart()

        received: queue.Queue[bytes] = queue.Queue()
        client = mqtt_client(f"rig-{uuid.uuid4().hex[:8]}")
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_message = lambda _c, _u, message: received.put(message.payload)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            assert received.get(timeout=30) == b"kept"
        finally:
            client.disconnect()
            client.loop_stop()
    assert broker.port == port


def test_tls_listener_accepts_clients_trusting_the_test_ca(
    pki: TestPKI, tmp_path: Path
) -> None:
    with Mosquitto(tmp_path, pki=pki) as broker:
        assert broker.tls_port is not None
        reason = connect_result(broker.host, broker.tls_port, tls=tls_context(pki))

    assert not reason.is_failure
