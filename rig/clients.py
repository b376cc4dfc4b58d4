"""MSAL clients of the identity-platform stand-in, built the way the bridge builds them."""

from __future__ import annotations

from typing import Any

import msal
import requests

from rig.idp import IdentityPlatform
from rig.pki import TestPKI

OUTLOOK_SCOPE = "https://outlook.office365.com/.default"


def confidential_client(
    idp: IdentityPlatform, pki: TestPKI, tenant: str, client_id: str, credential: Any
) -> msal.ConfidentialClientApplication:
    """An MSAL app as the bridge builds one: own session, trusting only the test CA."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=
    session.verify = str(pki.ca_file)
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=f"{idp.authority}/{tenant}",
        instance_discovery=False, http_client=session,
    )


def app_token(idp: IdentityPlatform, pki: TestPKI, tenant: str, client_id: str,
              credential: Any, scope: str = OUTLOOK_SCOPE) -> str:
    """An access token for the app (raises KeyError with MSAL's error dict otherwise)."""
    result = confidential_client(idp, pki, tenant, client_id, credential).acquire_token_for_client(
        [scope])
    return str(result["access_token"])
