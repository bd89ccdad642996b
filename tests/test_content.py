"""The content policy, table-driven, with invented messages (none taken from the corpus).

No database, no SMTP: rules are loaded from conf/content_rules.toml and applied to
strings or to a Context built by hand.
"""

from __future__ import annotations

import copy
import email.policy
import tomllib
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path

import pytest

from aliasdb.models import Order
from policies.content import check, evaluate
from policies.content_rules import ContentRules, load_rules
from policies.context import Context, Envelope, Settings
from policies.text import html_to_text, links, visible_text
from policies.verdict import Action

RULES_PATH = Path(__file__).resolve().parents[1] / "conf" / "content_rules.toml"
ORDER = "204-5550101-7788990"
OTHER_ORDER = "204-5550102-7788991"


@pytest.fixture(scope="module")
def rules() -> ContentRules:
    return load_rules(RULES_PATH)


@pytest.fixture(scope="module")
def raw_rules() -> dict:
    with RULES_PATH.open("rb") as fh:
        return tomllib.load(fh)


# --------------------------------------------------------------------------------------
# evaluate(): the kind of message, not the words of one message
# --------------------------------------------------------------------------------------

ALLOWED = [
    # trigger words in harmless context
    "We're sorry the vase arrived chipped. We'll send a free replacement today; "
    "no need to return the broken one.",
    "The item was on sale when you bought it, so the sale price also applies to the exchange.",
    "The price dropped after you ordered, so we've refunded you the 15% difference.",
    "Your invoice shows a 10% trade discount, applied at checkout as agreed.",
    "The discount code you used at checkout has been applied, so the total was £18.00.",
    "We can offer you a partial refund of 20% off the price, or a full refund if you send "
    "it back.",
    "Thanks for your 5-star review - we really appreciate it!",
    "Your item is back in stock now, so we'll ship it tomorrow.",
    "The new battery we fitted is a brand new unit with a 2 year warranty.",
    "Your statutory rights under the Sale of Goods Act are not affected.",
    # cancellation words that are not a request
    "We've cancelled your order as requested and the refund is on its way.",
    "If you'd like to cancel, just let us know and we'll cancel it for you - no problem.",
    "Hi, just so you know, you can cancel any time before it ships from your orders page, "
    "but there's no need - it's all on track.",
    "Would you like us to cancel the order? We can do it from our side and refund you "
    "straight away.",
    # carriers, manufacturers, identifiers
    "The courier will phone the number on your order about an hour before arriving.",
    "Royal Mail say the parcel is at the delivery office; you can call them on 0345 774 0740 "
    "to arrange redelivery.",
    "For assembly questions, the manufacturer's helpline is 0800 123 4567.",
    "Your parcel's tracking number is 1Z 999 AA1 01 2345 6784 and the reference is "
    "0044 1234 5678 90.",
    "Your order 302-4418760-1193825 was posted on 03/09/2024 at 10:22, weight 1.25 kg.",
    "Track it at https://www.evri.com/track/parcel/H01HYA0012345678 - should be Thursday.",
    "You can track your order on the UPS website (ups.com) with number 1Z999AA10123456784.",
    "Our VAT reg is GB 123 4567 89 and the batch code is printed on the base.",
    "Your invoice: 20 @ £3.00 = £60.00, VAT included.",
    # review words
    "We've reviewed your photos with the courier and agree it was damaged in transit.",
    "Thank you for your feedback about the packaging; we've updated our listing photos.",
    # ordinary order messages
    "Please could you confirm your house number? The courier couldn't find the address.",
    "Hi, the parcel locker code is 4821 - the courier will text it to you as well.",
    "Hello, the blue is the darkest shade in our range, so it won't get darker than the photo.",
    "Hi, I've added a few extra tissue layers to the box this time so the glass doesn't rattle.",
    "Dear buyer, our new courier mislabelled your parcel. We have sent a replacement by "
    "express at our cost.",
    # questions a customization needs ("which ... you would like") are not cross-selling
    "Could you tell me exactly which name and date you would like engraved?",
    "You may like to know that the glaze is food safe and dishwasher safe.",
    "We can't give you a discount on this order, sorry, but shipping is already free.",
    "Before you leave feedback, please make sure the item has actually arrived - the tracking "
    "shows it's still in transit.",
    "Hello, the pre-order item you bought will be dispatched on its release date, 12 May.",
]


@pytest.mark.parametrize("text", ALLOWED)
def test_allowed_messages_pass(rules: ContentRules, text: str) -> None:
    result = evaluate(rules, "About your order", text, alias_domain="relay.example")
    assert result.category is None, result.matches


REFUSED = [
    # marketing
    ("marketing", "Your order has shipped. P.S. use code SAVE20 for 20% off your next order!"),
    ("marketing", "Hi! Just wanted to let you know we've launched our spring range - handmade "
                  "linen aprons. Have a browse when you get a chance!"),
    ("marketing", "We're having a clearance event this weekend: up to 50% off selected items."),
    ("marketing", "Don't forget, we offer free shipping on all orders over $50!"),
    ("marketing", "Subscribe to our newsletter and never miss a deal."),
    ("marketing", "Did you know we also make matching pillowcases? They'd look lovely with "
                  "your duvet cover."),
    ("marketing", "Thank you for shopping with us! Don't forget our loyalty scheme - every "
                  "fifth order ships free."),
    ("marketing", "Hi, we're giving away a hamper! Reply with your favourite product to enter "
                  "the prize draw."),
    ("marketing", "Hi, to say thanks, here's a code for your next visit: HELLO5."),
    ("marketing", "Guten Tag, nur diese Woche: 20% Rabatt auf alle Kerzen in unserem Shop."),
    # cancellation requests, however polite
    ("cancellation_request", "Unfortunately we can't get this item any more. It would be really "
                             "helpful if you could cancel on your end."),
    ("cancellation_request", "Due to a pricing error, we kindly ask that you cancel your "
                             "purchase."),
    ("cancellation_request", "Is it possible for you to cancel the order? We have run out of "
                             "stock."),
    ("cancellation_request", "Could you go into your orders and hit cancel? It saves us a "
                             "penalty."),
    ("cancellation_request", "hey, any chance you could cancel? stock issue on our side sorry"),
    ("cancellation_request", "Hi, the supplier has let us down. If you cancel the order yourself, "
                             "you'll get your money back straight away."),
    ("cancellation_request", "Bonjour, pourriez-vous annuler la commande de votre côté ? Merci."),
    # feedback manipulation
    ("feedback_manipulation", "Leave us a review and get 10% off your next order."),
    ("feedback_manipulation", "We'll refund your shipping in exchange for an honest review."),
    ("feedback_manipulation", "If you enjoyed your purchase, a positive review would mean the "
                              "world to us!"),
    ("feedback_manipulation", "Please contact us before leaving any negative feedback so we can "
                              "make it right."),
    ("feedback_manipulation", "We noticed your 2-star review. Would you consider revising it? We "
                              "have fixed the problem."),
    ("feedback_manipulation", "We will send the refund as soon as you take down your 1-star "
                              "review."),
    ("feedback_manipulation", "Happy with your order? Leave a 5* review! Not happy? Message us "
                              "instead."),
    # off-platform contact
    ("off_platform_contact", "It's quicker on WhatsApp, my number is +44 7700 900987."),
    ("off_platform_contact", "Text me on 07700 900123 and I'll send photos."),
    ("off_platform_contact", "Can you send the photos to my.studio.mail@gmail.com instead?"),
    ("off_platform_contact", "For faster replies, reach me at lou [at] example [dot] com"),
    ("off_platform_contact", "We can discuss this over email: contact (at) wovenhome (dot) "
                             "example"),
    ("off_platform_contact", "Our full catalogue is at www.candlecraft.example - lots more "
                             "there."),
    ("off_platform_contact", "Follow our journey @wildrosepottery for behind-the-scenes photos."),
    ("off_platform_contact", "You might find it easier to order through Etsy where I have more "
                             "stock, link in my profile."),
    ("off_platform_contact", "Give us a ring on 020 7946 0123 and we can sort it out over the "
                             "phone."),
    # a second batch, written after the rules were tuned on everything above
    ("marketing", "Your order's on the way! Ps - our advent calendars just landed and they "
                  "sell out every year, so don't wait."),
    ("marketing", "Thank you! Stay tuned - we'll be launching a new range of wool socks next "
                  "week."),
    ("cancellation_request", "Hi, can I ask you to go to Your Orders and request a "
                             "cancellation? Thank you so much."),
    ("feedback_manipulation", "If you post a photo review we'll send you a free set of "
                              "coasters."),
    ("feedback_manipulation", "Once your refund arrives, we'd really appreciate it if you could "
                              "remove the negative feedback."),
    ("off_platform_contact", "We also sell directly from our workshop, so next time you can "
                             "order straight from us and save the fees."),
    ("off_platform_contact", "Hi, my personal email is kat.studio at yahoo dot com, it's "
                             "easier there."),
]


@pytest.mark.parametrize(("category", "text"), REFUSED)
def test_prohibited_messages_are_refused(rules: ContentRules, category: str, text: str) -> None:
    result = evaluate(rules, "About your order", text, alias_domain="relay.example")
    assert result.category == category, result.matches
    assert result.rule_ids
    assert all(rid in result.matches for rid in result.rule_ids)


def test_a_courier_phone_in_a_personal_sentence_is_still_off_platform(
        rules: ContentRules) -> None:
    text = "The courier is slow, so just call me on 07700 900321 instead."
    assert evaluate(rules, "", text).category == "off_platform_contact"


def test_allow_listed_links_and_addresses(rules: ContentRules) -> None:
    text = ("Tracking: https://www.royalmail.com/track-your-item#/WD1 or write to "
            "buyer-1a2b@relay.example, or see https://marketplace.example/orders")
    result = evaluate(rules, "", text, alias_domain="relay.example")
    assert result.category is None, result.matches


def test_reply_to_outside_the_sellers_addresses(rules: ContentRules) -> None:
    senders = frozenset({"shop@seller.example"})
    result = evaluate(rules, "Shipped", "Your order shipped today.",
                      reply_to=("someone@gmail.com",), senders=senders)
    assert result.category == "off_platform_contact"
    assert result.rule_ids == ("off_platform.reply_to",)
    same = evaluate(rules, "Shipped", "Your order shipped today.",
                    reply_to=("Shop@Seller.example",), senders=senders)
    assert same.category is None


def test_review_request_is_recognized_but_not_refused(rules: ContentRules) -> None:
    text = ("We hope you enjoy the lamp! If you have a moment, we'd appreciate an honest "
            "review - good or bad, it helps other buyers.")
    result = evaluate(rules, "", text)
    assert result.category is None
    assert result.review_request
    assert "feedback.review_request" in result.rule_ids


def test_quoted_buyer_text_does_not_count_on_a_reply(rules: ContentRules) -> None:
    text = ("Done - I've cancelled it and you'll see the refund in a few days.\n\n"
            "On Tue, 4 Mar 2025 at 10:00, Buyer wrote:\n"
            "> Please could you cancel my order? Please cancel it from your side.\n")
    assert evaluate(rules, "Re: please cancel", text, is_reply=True).category is None
    # on a message that answers nothing, "> " lines are the seller's own words
    assert evaluate(rules, "Order", text, is_reply=False).category == "cancellation_request"


def test_subject_counts(rules: ContentRules) -> None:
    result = evaluate(rules, "Flash sale: 30% off everything", "Hi, see you soon.")
    assert result.category == "marketing"


def test_below_threshold_is_reported_not_refused(rules: ContentRules) -> None:
    result = evaluate(rules, "", "Your parcel is on its way. Treat yourself to a cuppa!")
    assert result.category is None
    assert result.rule_ids == ("marketing.soft_sell",)
    assert result.scores["marketing"] == 0.5


def test_long_text_is_bounded(rules: ContentRules) -> None:
    text = "a dot " * 40_000 + "0123 456 " * 5_000
    assert evaluate(rules, "", text).category in (None, "off_platform_contact")


# --------------------------------------------------------------------------------------
# check(): the policy over a Context
# --------------------------------------------------------------------------------------


def _message(body: str, subject: str = f"Your order {ORDER}", *, html: str | None = None,
             in_reply_to: str | None = None) -> Message:
    msg = EmailMessage()
    msg["From"] = "Shop <shop@seller.example>"
    msg["To"] = "buyer-x1@relay.example"
    msg["Subject"] = subject
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    # the relay parses with compat32
    return BytesParser(policy=email.policy.compat32).parsebytes(msg.as_bytes())


def _ctx(rules: ContentRules | None, msg: Message, *, review_requests: frozenset[str] = frozenset(),
         is_reply: bool = False, reply_to: tuple[str, ...] = ()) -> Context:
    order = Order(ORDER, "s1", "b1", "home", "shipped", None)
    return Context(
        stage="data",
        envelope=Envelope("shop@seller.example", "buyer-x1@relay.example"),
        settings=Settings(alias_domain="relay.example", content_rules=rules),
        message=msg,
        direction="seller_to_buyer",
        seller_senders=frozenset({"shop@seller.example"}),
        orders=(order,),
        review_requests=review_requests,
        from_addresses=("shop@seller.example",),
        reply_to_addresses=reply_to,
        is_reply=is_reply,
    )


@pytest.mark.parametrize(("body", "words"), [
    ("Use code WELCOME10 at checkout for 10% off anything in the shop.", "promotional"),
    ("Please cancel the order from your side, we're out of stock.", "cancel"),
    ("Leave us a 5-star review and we'll send you a £10 voucher.", "review"),
    ("Email me directly at jo.maker@gmail.com and I'll send photos.", "outside the marketplace"),
])
def test_check_rejects_with_a_reason_naming_the_category(rules: ContentRules, body: str,
                                                         words: str) -> None:
    verdict = check(_ctx(rules, _message(body)))
    assert verdict is not None
    assert verdict.action is Action.REJECT
    assert (verdict.code, verdict.status) == (550, "5.7.1")
    assert words in verdict.reason
    assert verdict.reason.startswith("message refused:")
    assert verdict.rule_ids


def test_check_passes_a_clean_message(rules: ContentRules) -> None:
    assert check(_ctx(rules, _message("Your order left today with DPD."))) is None


def test_check_notes_rules_below_threshold(rules: ContentRules) -> None:
    verdict = check(_ctx(rules, _message("Shipped today - why not try it with honey?")))
    assert verdict is not None and verdict.action is Action.ACCEPT
    assert verdict.rule_ids == ("marketing.soft_sell",)


def test_neutral_review_request_once_then_manipulation(rules: ContentRules) -> None:
    body = (f"Your order {ORDER} should have arrived. Whether good or bad, we'd appreciate "
            "your honest feedback on the product page.")
    first = check(_ctx(rules, _message(body)))
    assert first is not None and first.action is Action.ACCEPT
    assert [(e.kind, e.order_id) for e in first.effects] == [("review_request", ORDER)]

    second = check(_ctx(rules, _message(body), review_requests=frozenset({ORDER})))
    assert second is not None and second.action is Action.REJECT
    assert "feedback.repeat_request" in second.rule_ids
    assert ORDER in second.reason

    # a request for another order of the pair is its own first request
    other = body.replace(ORDER, OTHER_ORDER)
    third = check(_ctx(rules, _message(other, subject="How was it?"),
                       review_requests=frozenset({ORDER})))
    assert third is not None and third.action is Action.ACCEPT
    assert [e.order_id for e in third.effects] == [OTHER_ORDER]


def test_manipulative_review_request_is_refused_even_the_first_time(rules: ContentRules) -> None:
    body = f"Loved your order {ORDER}? Please leave us positive feedback!"
    verdict = check(_ctx(rules, _message(body)))
    assert verdict is not None and verdict.action is Action.REJECT
    assert "feedback.review_request" not in verdict.rule_ids
    assert verdict.effects == ()


def test_check_reads_html_parts_and_their_links(rules: ContentRules) -> None:
    html = ('<p>Your order has shipped. <a href="https://my-own-shop.example/sale">Click '
            "here</a> for tracking.</p><script>var x = 1;</script>")
    verdict = check(_ctx(rules, _message("Your order has shipped.", html=html)))
    assert verdict is not None and verdict.action is Action.REJECT
    assert "off_platform.link" in verdict.rule_ids


def test_check_reply_to_elsewhere(rules: ContentRules) -> None:
    verdict = check(_ctx(rules, _message("Shipped today."), reply_to=("me@example.net",)))
    assert verdict is not None and verdict.rule_ids == ("off_platform.reply_to",)


def test_check_on_a_reply_ignores_the_buyers_quote(rules: ContentRules) -> None:
    body = ("Of course - I've cancelled it as you asked.\n\n"
            "> can you cancel it please? I ordered the wrong size\n")
    msg = _message(body, subject="Re: cancel please", in_reply_to="<a1@relay.example>")
    assert check(_ctx(rules, msg, is_reply=True)) is None


def test_check_without_rules_fails_closed() -> None:
    verdict = check(_ctx(None, _message("hello")))
    assert verdict is not None and verdict.action is Action.TEMPFAIL


# --------------------------------------------------------------------------------------
# ContentRules.from_dict: validation names what is wrong
# --------------------------------------------------------------------------------------


def _broken(raw: dict, change) -> dict:
    data = copy.deepcopy(raw)
    change(data)
    return data


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["rules"][0].update(category="spam"), "marketing.discount_code"),
    (lambda d: d["rules"][0].update(patterns=["(unclosed"]), "marketing.discount_code"),
    (lambda d: d["rules"][1].update(id=d["rules"][0]["id"]), "duplicate"),
    (lambda d: d["rules"][0].pop("weight"), "weight"),
    (lambda d: d["rules"][0].update(weight=-1), "weight"),
    (lambda d: d["rules"][0].update(patterns=[]), "patterns"),
    (lambda d: d["rules"][0].update(colour="red"), "colour"),
    (lambda d: d["categories"]["marketing"].update(threshold=0), "threshold"),
    (lambda d: d["categories"].pop("marketing"), "marketing"),
    (lambda d: d["off_platform"]["detectors"].update({"off_platform.pigeon": 1.0}), "pigeon"),
    (lambda d: d["off_platform"].update(phone_regions=["XX"]), "XX"),
    (lambda d: d["critical"]["rules"][0].update(topic="weather"), "weather"),
    (lambda d: d.update(extra={}), "extra"),
])
def test_from_dict_rejects_bad_rules(raw_rules: dict, change, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContentRules.from_dict(_broken(raw_rules, change))


def test_from_dict_is_pure_and_complete(raw_rules: dict) -> None:
    compiled = ContentRules.from_dict(raw_rules)
    assert {c.name for c in compiled.categories} == {
        "marketing", "cancellation_request", "feedback_manipulation", "off_platform_contact"}
    ids = [r.id for r in compiled.rules] + [r.id for r in compiled.critical_rules]
    assert len(ids) == len(set(ids))


def test_load_rules_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text("[categories\n")
    with pytest.raises(ValueError, match="rules.toml"):
        load_rules(bad)


# --------------------------------------------------------------------------------------
# visible_text(): every text part, decoded, HTML reduced to what a reader sees
# --------------------------------------------------------------------------------------

MULTIPART = (
    b"From: shop@seller.example\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
    b"--B\r\n"
    b'Content-Type: multipart/alternative; boundary="A"\r\n\r\n'
    b"--A\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Sch=C3=B6ne Gr=C3=BC=C3=9Fe\r\n"
    b"--A\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n\r\n"
    b"<html><head><title>T</title><style>p{color:red}</style></head><body>"
    b"<p>Caf\xe9 <a href='https://elsewhere.example/x'>here</a></p>"
    b"<script>alert('x')</script><ul><li>one</li><li>two</li></ul></body></html>\r\n"
    b"--A--\r\n"
    b"--B\r\n"
    b"Content-Type: text/plain; charset=no-such-charset\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"SGVsbG8g4oKs\r\n"
    b"--B\r\n"
    b"Content-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="a.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--B--\r\n"
)


@pytest.mark.parametrize("policy", [email.policy.compat32, email.policy.default])
def test_visible_text_decodes_every_text_part(policy) -> None:
    msg = BytesParser(policy=policy).parsebytes(MULTIPART)
    text = visible_text(msg)
    assert "Schöne Grüße" in text
    assert "Café here (https://elsewhere.example/x)" in text
    assert "one" in text and "two" in text
    assert "Hello €" in text  # unknown charset: utf-8 with replacement
    for hidden in ("alert", "color:red", "PDF", "JVBER"):
        assert hidden not in text
    assert links(msg) == ["https://elsewhere.example/x"]


def test_html_blockquote_is_rendered_as_quoted_lines() -> None:
    text = html_to_text("<p>Done.</p><blockquote><p>please cancel</p></blockquote>")
    assert text.splitlines()[0] == "Done."
    assert "> please cancel" in text
