"""Filters end to end on the rig: `search` on Dovecot's SEARCH, routes on their topics."""

from __future__ import annotations

from typing import Any

from rig.mqttsub import Collector
from rig.samples import make_message
from tests.conftest import wait_online

ALERTS = 'FROM "alerts@example.com" SUBJECT "alarm"'
ROUTES = [
    {"name": "parcels", "from": ["*@parcels.example"]},  # address only
    {"name": "alarm", "subject": "(?i)alarm"},  # subject only
    {"name": "bank", "from": ["*@bank.example"], "subject": r"code \d+"},  # both
]


def deliver(dovecot: Any, mailbox: str, sender: str, subject: str) -> int:
    uid: int = dovecot.deliver(mailbox, make_message(subject=subject, sender=sender, to=mailbox))
    return uid


def subjects(collector: Collector, topic: str) -> list[str]:
    return [m.json()["subject"] for m in collector.on(topic)]


def test_search_publishes_only_matching_mail_and_counts_the_whole_folder(
    mode: dict[str, Any], make_bridge: Any, secret_credential: dict[str, Any],
    collector: Collector, dovecot: Any, mailbox: str, base_topic: str,
) -> None:
    make_bridge(secret_credential, folders=[{"name": "INBOX", "search": ALERTS}], **mode).start()
    wait_online(collector, base_topic)
    messages, state = f"{base_topic}/home/inbox/message", f"{base_topic}/home/inbox/state"
    deliver(dovecot, mailbox, "alerts@example.com", "Alarm: garage door open")
    deliver(dovecot, mailbox, "alerts@example.com", "Weekly report")
    deliver(dovecot, mailbox, "Bob <bob@example.com>", "alarm clock for sale")
    collector.wait_topic(messages)
    last = deliver(dovecot, mailbox, "Alerts <ALERTS@example.com>", "Second alarm")
    collector.wait_topic(messages, count=2)
    # every message counts in the state; the position passed over the ones not published
    collector.wait_for(lambda m: m.topic == state and m.json()["total"] == 4
                       and m.json()["unread"] == 4 and m.json()["last_uid"] == last)
    passed_over = deliver(dovecot, mailbox, "bob@example.com", "nothing to see")
    collector.wait_for(lambda m: m.topic == state and m.json()["last_uid"] == passed_over)
    deliver(dovecot, mailbox, "alerts@example.com", "third ALARM")
    collector.wait_topic(messages, count=3)
    assert subjects(collector, messages) == [
        "Alarm: garage door open", "Second alarm", "third ALARM"]
    final = collector.wait_for(lambda m: m.topic == state and m.json()["total"] == 6)[-1].json()
    assert final["last_message"]["subject"] == "third ALARM"


def test_search_with_non_ascii_text_is_sent_as_utf8(
    make_bridge: Any, secret_credential: dict[str, Any], collector: Collector, dovecot: Any,
    mailbox: str, base_topic: str,
) -> None:
    search = 'SUBJECT "Grüße" FROM "alice@example.com"'
    make_bridge(secret_credential, folders=[{"name": "INBOX", "search": search}]).start()
    wait_online(collector, base_topic)
    messages = f"{base_topic}/home/inbox/message"
    deliver(dovecot, mailbox, "alice@example.com", "Viele Grüße aus Wien")
    deliver(dovecot, mailbox, "alice@example.com", "Greetings from Vienna")
    deliver(dovecot, mailbox, "alice@example.com", "Noch mehr Grüße")
    collector.wait_topic(messages, count=2)
    assert subjects(collector, messages) == ["Viele Grüße aus Wien", "Noch mehr Grüße"]


def test_backfill_with_search_publishes_the_newest_matching_mail(
    make_bridge: Any, secret_credential: dict[str, Any], collector: Collector, dovecot: Any,
    mailbox: str, base_topic: str,
) -> None:
    for sender, subject in [("alerts@example.com", "alarm 1"), ("alerts@example.com", "alarm 2"),
                            ("alerts@example.com", "alarm 3"), ("bob@example.com", "alarm 4")]:
        deliver(dovecot, mailbox, sender, subject)
    make_bridge(secret_credential,
                folders=[{"name": "INBOX", "search": ALERTS, "backfill": 2}]).start()
    wait_online(collector, base_topic)
    messages = f"{base_topic}/home/inbox/message"
    collector.wait_topic(messages, count=2)
    state = collector.wait_for(lambda m: m.topic == f"{base_topic}/home/inbox/state"
                               and m.json()["last_uid"] == max(dovecot.uids(mailbox)))
    assert state[-1].json()["total"] == 4
    deliver(dovecot, mailbox, "alerts@example.com", "alarm 5")
    collector.wait_topic(messages, count=3)
    assert subjects(collector, messages) == ["alarm 2", "alarm 3", "alarm 5"]


def test_routes_by_address_by_subject_and_by_both(
    mode: dict[str, Any], make_bridge: Any, secret_credential: dict[str, Any],
    collector: Collector, dovecot: Any, mailbox: str, base_topic: str,
) -> None:
    make_bridge(secret_credential, folders=[{"name": "INBOX", "routes": ROUTES}], **mode).start()
    wait_online(collector, base_topic)
    mail = [  # sender, subject, the routes it matches
        ("Driver <driver@Parcels.example>", "Delivered", ["parcels"]),
        ("x@else.example", "ALARM in the garage", ["alarm"]),
        ("otp@bank.example", "Your code 1234", ["bank"]),
        ("otp@bank.example", "Your statement", []),  # both keys needed: subject fails
        ("Mallory <otp@bank.example.evil>", "code 99", []),  # both keys needed: sender fails
        ("driver@parcels.example", "alarm: parcel stuck", ["parcels", "alarm"]),
        ("x@else.example", "hello", []),
    ]
    for sender, subject, _ in mail:
        deliver(dovecot, mailbox, sender, subject)
    # a route never stops the main topic: every message is there, with its routes
    main = collector.wait_topic(f"{base_topic}/home/inbox/message", count=len(mail))
    assert [(m.json()["subject"], m.json()["routes"]) for m in main] == [
        (subject, routes) for _, subject, routes in mail]
    for route in ("parcels", "alarm", "bank"):
        expected = [subject for _, subject, routes in mail if route in routes]
        topic = f"{base_topic}/home/inbox/route/{route}"
        received = collector.wait_topic(topic, count=len(expected))
        assert [m.json()["subject"] for m in received] == expected
        by_uid = {m.json()["uid"]: m.payload for m in main}
        assert all(m.payload == by_uid[m.json()["uid"]] for m in received)
        assert not any(m.retain for m in received)


def test_restart_with_search_and_routes_misses_nothing_and_repeats_nothing(
    mode: dict[str, Any], make_bridge: Any, secret_credential: dict[str, Any],
    collector: Collector, dovecot: Any, mailbox: str, base_topic: str,
) -> None:
    folders = [{"name": "INBOX", "search": ALERTS, "routes": ROUTES[1:2]}]
    messages = f"{base_topic}/home/inbox/message"
    alarm = f"{base_topic}/home/inbox/route/alarm"
    bridge = make_bridge(secret_credential, folders=folders, **mode).start()
    wait_online(collector, base_topic)
    deliver(dovecot, mailbox, "alerts@example.com", "alarm before")
    deliver(dovecot, mailbox, "bob@example.com", "alarm from bob before")
    collector.wait_topic(alarm)
    assert bridge.stop() == 0
    collector.wait_for(lambda m: m.topic == f"{base_topic}/bridge/state"
                       and m.payload == b"offline")

    deliver(dovecot, mailbox, "bob@example.com", "alarm from bob while down")
    deliver(dovecot, mailbox, "alerts@example.com", "alarm while down")
    make_bridge(secret_credential, folders=folders, **mode).start()
    collector.wait_topic(alarm, count=2, timeout=30)
    deliver(dovecot, mailbox, "alerts@example.com", "alarm after")
    collector.wait_topic(alarm, count=3)
    expected = ["alarm before", "alarm while down", "alarm after"]
    assert subjects(collector, messages) == expected
    assert subjects(collector, alarm) == expected
