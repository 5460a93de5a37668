from __future__ import annotations

import pytest

from wagate.core.errors import BadRequestData
from wagate.core.model import ChatId, ChatKind
from wagate.wire.chat_id import parse_chat_id


def digits(n: int, start: str = "1") -> str:
    return (start + "0123456789" * 3)[:n]


@pytest.mark.parametrize("n", [11, 12])
def test_personal_within_default_range(n: int) -> None:
    phone = digits(n)
    chat = parse_chat_id(f"{phone}@c.us")
    assert chat == ChatId(ChatKind.PERSONAL, phone)
    assert chat.phone == phone
    assert str(chat) == f"{phone}@c.us"


@pytest.mark.parametrize("n", [1, 10, 13, 20])
def test_personal_outside_default_range(n: int) -> None:
    with pytest.raises(BadRequestData, match="bad request data"):
        parse_chat_id(f"{digits(n)}@c.us")


@pytest.mark.parametrize(("n", "ok"), [(7, False), (8, True), (9, True), (10, True), (11, False)])
def test_personal_custom_range(n: int, ok: bool) -> None:
    text = f"{digits(n)}@c.us"
    if ok:
        assert parse_chat_id(text, (8, 10)).user == digits(n)
    else:
        with pytest.raises(BadRequestData):
            parse_chat_id(text, (8, 10))


def test_custom_single_length_range() -> None:
    assert parse_chat_id(f"{digits(13)}@c.us", (13, 13)).kind is ChatKind.PERSONAL
    with pytest.raises(BadRequestData):
        parse_chat_id(f"{digits(12)}@c.us", (13, 13))


@pytest.mark.parametrize("bounds", [(0, 5), (5, 4), (-1, 12)])
def test_nonsense_phone_digit_range_is_a_programming_error(bounds: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="phone_digits"):
        parse_chat_id("11001234567@c.us", bounds)


@pytest.mark.parametrize(("n", "ok"), [(17, False), (18, True), (19, False)])
def test_new_group_has_exactly_18_digits(n: int, ok: bool) -> None:
    text = f"{digits(n)}@g.us"
    if ok:
        assert parse_chat_id(text) == ChatId(ChatKind.GROUP, digits(n))
    else:
        with pytest.raises(BadRequestData):
            parse_chat_id(text)


@pytest.mark.parametrize(("n", "ok"), [(9, False), (10, True), (11, False)])
def test_old_group_timestamp_has_exactly_10_digits(n: int, ok: bool) -> None:
    user = f"11001234567-{digits(n)}"
    if ok:
        chat = parse_chat_id(f"{user}@g.us")
        assert chat == ChatId(ChatKind.GROUP, user)
        assert chat.phone is None
        assert str(chat) == f"{user}@g.us"
    else:
        with pytest.raises(BadRequestData):
            parse_chat_id(f"{user}@g.us")


@pytest.mark.parametrize(("n", "ok"), [(10, False), (11, True), (12, True), (13, False)])
def test_old_group_creator_follows_phone_range(n: int, ok: bool) -> None:
    text = f"{digits(n)}-1581234048@g.us"
    if ok:
        assert parse_chat_id(text).kind is ChatKind.GROUP
    else:
        with pytest.raises(BadRequestData):
            parse_chat_id(text)


def test_old_group_creator_custom_range() -> None:
    assert parse_chat_id(f"{digits(9)}-1581234048@g.us", (9, 9)).kind is ChatKind.GROUP
    with pytest.raises(BadRequestData):
        parse_chat_id(f"{digits(11)}-1581234048@g.us", (9, 9))


@pytest.mark.parametrize(("n", "ok"), [(5, False), (6, True), (13, True), (20, True), (21, False)])
def test_lid_has_6_to_20_digits(n: int, ok: bool) -> None:
    text = f"{digits(n)}@lid"
    if ok:
        chat = parse_chat_id(text)
        assert chat == ChatId(ChatKind.LID, digits(n))
        assert chat.phone is None
        assert str(chat) == text
    else:
        with pytest.raises(BadRequestData):
            parse_chat_id(text)


def test_lid_ignores_phone_range() -> None:
    assert parse_chat_id(f"{digits(6)}@lid", (11, 11)).kind is ChatKind.LID


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@c.us",
        "@g.us",
        "@lid",
        "11001234567",
        "11001234567@",
        " 11001234567@c.us",
        "11001234567@c.us ",
        "11001234567@c.us\n",
        "\t11001234567@c.us",
        "1100 1234567@c.us",
        "+11001234567@c.us",
        "-11001234567@c.us",
        "11001234567@C.US",
        "11001234567@c.US",
        "11001234567@C.us",
        "11001234567@LID",
        "120363043968066561@G.US",
        "11001234567@s.whatsapp.net",
        "11001234567@c.usx",
        "11001234567@c_us",
        "11001234567@cxus",
        "11001234567@@c.us",
        "11001234567@c.us@c.us",
        "x11001234567@c.us",
        "11001234567@g.us",
        "120363043968066561@c.us",
        "11001234567-1581234048@c.us",
        "11001234567-1581234048@lid",
        "11001234567_1581234048@g.us",
        "11001234567--1581234048@g.us",
        "11001234567-1581234048-1@g.us",
        "-1581234048@g.us",
        "11001234567-@g.us",
        "1100123456a@c.us",
        "1100123456.7@c.us",
        "11001234567@c.us\x00",
    ],
)
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(BadRequestData):
        parse_chat_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "\u0661\u0661\u0660\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667@c.us",  # Arabic-Indic
        "\uff11\uff11\uff10\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17@c.us",  # full width
        "1100123456\u0667@c.us",
        "\u0661" * 18 + "@g.us",
        "\u0661" * 10 + "@lid",
        "11001234567-158123404\u0668@g.us",
        "11001234567@c\u2024us",  # one-dot leader instead of "."
    ],
)
def test_rejects_non_ascii_digits_and_lookalikes(text: str) -> None:
    with pytest.raises(BadRequestData):
        parse_chat_id(text)


def test_bad_request_data_message_is_the_wire_text() -> None:
    with pytest.raises(BadRequestData) as caught:
        parse_chat_id("nope")
    assert caught.value.message == "bad request data"
