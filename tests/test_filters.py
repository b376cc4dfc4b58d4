"""Filters without servers: `search` criteria and routes as configured, sent and matched."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientError

from bridge.cli.check import search_step
from bridge.config.load import parse_config
from bridge.config.model import Config, RouteConfig
from bridge.config.search import SearchSyntaxError, parse_search
from bridge.errors import ConfigError, ImapError
from bridge.imap.search import Criteria, SearchRefused
from bridge.mail.routes import Route, Router
from bridge.mqtt.discovery import build_discovery
from bridge.mqtt.topics import Topics

ACCOUNT: dict[str, Any] = {
    "name": "home", "mailbox": "me@contoso.com",
    "tenant_id": "11111111-2222-3333-4444-555555555555",
    "client_id": "66666666-7777-8888-9999-000000000000", "client_secret": "not-a-secret",
}
FOLDER = "accounts[0].folders[0]"


def config_with(**folder: Any) -> Config:
    return parse_config({"mqtt": {"host": "broker.local"},
                         "accounts": [{**ACCOUNT, "folders": [{"name": "INBOX", **folder}]}]},
                        environ={})


def problems(**folder: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_with(**folder)
    return caught.value.problems


# -- search: checked at load ------------------------------------------------------------------


@pytest.mark.parametrize("criteria", [
    'FROM "alerts@example.com" SUBJECT "alarm"',
    "UnSeen UnDeleted",  # Home Assistant's default
    'OR FROM "a@example.com" FROM "b@example.com"',
    '(OR FROM a@example.com FROM b@example.com) NOT SUBJECT "spam" SINCE 1-Dec-2026',
    'HEADER X-Priority "1" LARGER 1000 KEYWORD $Label1',
    'SUBJECT "Grüße" FROM "alerts@example.com"',
])
def test_search_criteria_as_home_assistant_users_write_them_load(criteria: str) -> None:
    (folder,) = config_with(search=criteria).accounts[0].folders
    assert folder.search == criteria


@pytest.mark.parametrize(("criteria", "says"), [
    ('FROM "alerts@example.com SUBJECT alarm', "unbalanced quotes: the string starting at "
                                               "column 6 is not closed"),
    ('FORM "alerts@example.com"', "unknown search key 'FORM' at column 1; did you mean 'FROM'?"),
    ('X-GM-RAW "has:attachment"', "X-GM-RAW is a Gmail extension"),
    ("(OR FROM a FROM b", "unbalanced parentheses"),
    ("FROM a)", "')' at column 7 has no '('"),
    ("SUBJECT", "SUBJECT needs a string after it"),
    ("OR FROM a", "OR needs a second search key"),
    ("SINCE 2026-12-01", "SINCE takes a date as d-Mon-yyyy"),
    ("LARGER 10MB", "LARGER takes a size in bytes"),
    ("SMALLER 4294967296", "SMALLER takes a size in bytes below 4294967296"),
    ("SINCE 1-Jan-1", "SINCE takes a date as d-Mon-yyyy"),
    ("SENTON 31-Feb-2026", "SENTON takes a date as d-Mon-yyyy"),
    ("CHARSET UTF-8 FROM a", "leave out CHARSET"),
    ("UID 100:*", "the bridge chooses the new messages itself"),
    ('"alarm"', "a string where a search key belongs"),
    ('(SUBJECT "Grüße")', "non-ASCII text cannot use parentheses"),
    ("   ", "must not be empty"),
])
def test_bad_search_criteria_are_one_problem_naming_the_key(criteria: str, says: str) -> None:
    (problem,) = problems(search=criteria)
    assert problem.startswith(f"{FOLDER}.search: ")
    assert says in problem


def test_criteria_go_to_the_server_as_written_strings_quoted_anded_with_the_uid_range() -> None:
    criteria = Criteria('(OR FROM a@x.example FROM "b c") SUBJECT "say \\"hi\\"" UnSeen')
    assert criteria.arguments("5:9") == (
        b'UID 5:9 (OR FROM a@x.example FROM "b c") SUBJECT "say \\"hi\\"" UnSeen', None)


def test_non_ascii_criteria_go_with_charset_utf8_for_literals() -> None:
    args, charset = Criteria('SUBJECT "Grüße" FROM "a b"').arguments("1:*")
    assert charset == "UTF-8"
    assert args == [b"UID", b"1:*", b"SUBJECT", "Grüße".encode(), b"FROM", b"a b"]


class RefusingClient:
    """An IMAPClient whose SEARCH gets Exchange's answer to criteria it cannot run."""

    def search(self, criteria: Any, charset: str | None = None) -> list[int]:
        raise IMAPClientError("UID SEARCH command error: BAD [b'Command Argument Error. 11']")

    def select_folder(self, name: str, readonly: bool = False) -> dict[bytes, Any]:
        return {}

    def close_folder(self) -> None:
        pass


def test_a_search_the_server_refuses_is_an_imap_error_naming_the_criteria() -> None:
    with pytest.raises(SearchRefused) as caught:
        Criteria("SUBJECT alarm").matching(RefusingClient(), "1:*")  # type: ignore[arg-type]
    assert isinstance(caught.value, ImapError)
    assert str(caught.value).startswith("the server refused search = 'SUBJECT alarm': ")
    assert "Command Argument Error" in str(caught.value)


def test_check_reports_a_refused_search_as_a_failed_step_with_a_fix() -> None:
    config = config_with(search="SUBJECT alarm")
    account = config.accounts[0]
    step = search_step(RefusingClient(), account, account.folders[0],  # type: ignore[arg-type]
                       "INBOX")
    assert not step.ok and step.name == "search in INBOX" and step.error == "search_refused"
    assert "Command Argument Error" in step.detail
    assert "change the search criteria" in (step.hint or "")


def test_parse_search_keeps_strings_apart_from_keys() -> None:
    kinds = [(t.kind, t.text) for t in parse_search('NOT (FROM "x y") SEEN')]
    assert kinds == [("atom", "NOT"), ("(", "("), ("atom", "FROM"), ("string", "x y"),
                     (")", ")"), ("atom", "SEEN")]
    with pytest.raises(SearchSyntaxError):
        parse_search("")


# -- routes: checked at load ------------------------------------------------------------------


def test_routes_load_with_address_globs_a_subject_regex_or_both() -> None:
    (folder,) = config_with(routes=[
        {"name": "parcels", "from": ["*@Parcels.example", "tracking@shop.example"]},
        {"name": "alarm", "subject": "(?i)alarm"},
        {"name": "bank-otp", "from": "*@bank.example", "subject": r"code \d+"},
    ]).accounts[0].folders
    assert folder.routes == (
        RouteConfig("parcels", ("*@parcels.example", "tracking@shop.example")),
        RouteConfig("alarm", (), "(?i)alarm"),
        RouteConfig("bank-otp", ("*@bank.example",), r"code \d+"),
    )


@pytest.mark.parametrize(("route", "key", "says"), [
    ({"name": "x", "subject": "(unclosed"}, "routes[0].subject",
     "not a valid regular expression: missing ), unterminated subpattern at position 0"),
    ({"name": "x", "from": ["*@ok.example", "bad glob"]}, "routes[0].from[1]",
     "'bad glob' is not an address glob"),
    ({"name": "x", "from": ["[abc@x.example"]}, "routes[0].from[0]", "has a '[' without"),
    ({"name": "x", "from": ["parcels.example"]}, "routes[0].from[0]",
     "did you mean '*@parcels.example'?"),
    ({"name": "x"}, "routes[0]", "a route needs from"),
    ({"name": "Parcels!", "subject": "x"}, "routes[0].name", "use only a-z, 0-9"),
    ({"subject": "x"}, "routes[0].name", "required key is missing"),
    ({"name": "x", "subjcet": "x", "subject": "y"}, "routes[0].subjcet",
     "unknown key; did you mean 'subject'?"),
    ({"name": "x", "subject": ""}, "routes[0].subject", "must not be empty"),
])
def test_a_bad_route_is_one_problem_naming_its_key(
    route: dict[str, Any], key: str, says: str,
) -> None:
    (problem,) = problems(routes=[route])
    assert problem.startswith(f"{FOLDER}.{key}: ") and says in problem


def test_route_names_are_unique_in_a_folder() -> None:
    (problem,) = problems(routes=[{"name": "a", "subject": "x"}, {"name": "a", "subject": "y"}])
    assert problem.startswith(f"{FOLDER}.routes[1].name: 'a' is already the name of")


# -- routes: matching -------------------------------------------------------------------------


ROUTER = Router([
    Route("parcels", senders=("*@parcels.example", "tracking@shop.example")),
    Route("alarm", subject="(?i)alarm"),
    Route("bank", senders=("*@bank.example",), subject=r"code \d+"),
])


@pytest.mark.parametrize(("address", "subject", "routes"), [
    ("Driver@PARCELS.example", "Your parcel", ["parcels"]),  # address only, any case
    ("tracking@shop.example", "", ["parcels"]),
    ("someone@else.example", "ALARM in the garage", ["alarm"]),  # subject only
    ("otp@bank.example", "Your code 1234", ["bank"]),  # both
    ("otp@bank.example", "Your statement", []),  # both needed: the subject fails
    ("phish@bank.example.evil", "Your code 1234", []),  # both needed: the sender fails
    ("driver@parcels.example", "alarm: parcel stuck", ["parcels", "alarm"]),
    (None, "alarm", ["alarm"]),  # no From: only routes without sender globs
    (None, None, []),
])
def test_routes_match_by_sender_subject_or_both(
    address: str | None, subject: str | None, routes: list[str],
) -> None:
    assert ROUTER.match(address, subject) == routes


def test_a_summary_is_matched_by_its_from_address_and_decoded_subject() -> None:
    summary = {"from": {"name": "Shop", "address": "tracking@shop.example"}, "subject": "x"}
    assert ROUTER.match_summary(summary) == ["parcels"]
    assert ROUTER.match_summary({"from": None, "subject": "Alarm"}) == ["alarm"]
    assert not Router([])


# -- Home Assistant: an event entity per route --------------------------------------------------


def test_each_route_is_an_event_entity_on_the_account_device() -> None:
    config = config_with(routes=[{"name": "parcels", "from": ["*@parcels.example"]},
                                 {"name": "alarm", "subject": "alarm"}])
    # the account's device (the bridge's own is published beside it)
    payload = build_discovery(config, Topics("outlook2mqtt"))[
        "homeassistant/device/outlook2mqtt_home/config"]
    components = json.loads(payload)["components"]
    for name in ("parcels", "alarm"):
        entity = components[f"inbox_route_{name}"]
        assert entity["platform"] == "event" and entity["event_types"] == ["new_message"]
        assert entity["state_topic"] == f"outlook2mqtt/home/inbox/route/{name}"
        assert entity["default_entity_id"] == f"event.outlook_home_inbox_route_{name}"
        assert entity["name"] == f"INBOX route {name}"
        # Home Assistant before 2025.10 derives the id from the device and entity names
        derived = re.sub(r"[^a-z0-9]+", "_", f"Outlook home {entity['name']}".lower())
        assert entity["default_entity_id"] == f"event.{derived}"
        assert entity["unique_id"] == f"outlook2mqtt_home_inbox_route_{name}"
