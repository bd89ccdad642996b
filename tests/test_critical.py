"""The [Important] rule: tag detection and critical topics, with invented messages."""

from __future__ import annotations

import email.policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from policies.content import evaluate
from policies.content_rules import ContentRules, load_rules
from policies.critical import CriticalResult, classify, has_important_tag
from policies.text import decoded_subject

RULES_PATH = Path(__file__).resolve().parents[1] / "conf" / "content_rules.toml"


@pytest.fixture(scope="module")
def rules() -> ContentRules:
    return load_rules(RULES_PATH)


@pytest.mark.parametrize(("subject", "tagged"), [
    ("[Important] Delivery date for your table", True),
    ("Delivery date for your table [IMPORTANT]", True),
    ("Your order - [important] - address", True),
    ("Re: [Important] engraving", True),
    ("Important: delivery date", False),
    ("IMPORTANT delivery date", False),
    ("[Importance] low", False),
    ("(Important) delivery", False),
    ("", False),
])
def test_has_important_tag(subject: str, tagged: bool) -> None:
    assert has_important_tag(subject) is tagged


def test_tag_inside_an_encoded_word_is_found_after_decoding() -> None:
    raw = (b"Subject: =?utf-8?q?=5BIMPORTANT=5D_Direcci=C3=B3n_de_env=C3=ADo?=\r\n"
           b"From: shop@seller.example\r\n\r\nhola\r\n")
    msg = BytesParser(policy=email.policy.compat32).parsebytes(raw)
    assert "[Important]" not in raw.decode()
    assert has_important_tag(decoded_subject(msg))


CASES = [
    # customization
    ("customization", "[Important] Your name necklace",
     "Before I stamp the letters, can you confirm the spelling of the name is Siobhan?"),
    ("customization", "[IMPORTANT] artwork proof",
     "Please approve the proof for your custom wedding sign so I can start production."),
    ("customization", "[important] choice of wood",
     "Your bespoke bookcase: would you like oak or walnut? I need to order the timber."),
    ("customization", "Monogram question [Important]",
     "Which initials would you like embroidered on the towels, and in which thread colour?"),
    # delivery scheduling
    ("delivery_scheduling", "[Important] delivery of your sofa",
     "Our delivery team can bring your sofa on Monday or Wednesday. Which day works for you?"),
    ("delivery_scheduling", "Delivery appointment [Important]",
     "The freight company needs to arrange a delivery appointment with you - please reply "
     "with a convenient date."),
    ("delivery_scheduling", "[Important] Your wardrobe",
     "The two-man team needs to book a delivery slot; someone will need to be home to sign."),
    # shipping address
    ("shipping_address", "[Important] address problem",
     "The carrier says your address is incomplete - there's no street name. Can you reply "
     "with the full address?"),
    ("shipping_address", "[Important]",
     "Your parcel was returned to us as undeliverable. Please confirm your shipping address "
     "so we can resend it."),
    ("shipping_address", "[Important] Your order",
     "We can't ship to a PO box with this carrier. Could you update the address on the order?"),
    ("shipping_address", "[Important] house number",
     "Hi, your house number is missing from the order, and the courier won't accept it "
     "without one."),
    ("shipping_address", "Re: [Important] address",
     "The postcode you entered doesn't match the street - please correct it in your order "
     "or reply here."),
    ("customization", "[Important] Curtain measurements",
     "For your made-to-measure curtains I need the exact drop from the rail to the floor. "
     "Could you measure and let me know?"),
    ("customization", "[Important] Your personalised mug",
     "The name you entered has 18 letters, which won't fit on the mug. Could you send a "
     "shorter version?"),
    ("customization", "[Important] Design proof",
     "Attached is the mock-up for your logo sign. Please check it and reply with any changes "
     "before I cut the acrylic."),
    ("delivery_scheduling", "[Important] Rearranging your delivery",
     "The van broke down, so we need to reschedule your delivery. Which day next week suits "
     "you?"),
    # not critical, whatever the tag says
    (None, "[Important] Your order has been delayed",
     "Sorry, our supplier is late with the fabric, so your order will ship next week."),
    (None, "[IMPORTANT] Holiday closure",
     "Our workshop is closed from 20 December to 3 January. Orders placed now ship in January."),
    (None, "[Important] Please review us",
     "If you're happy with the custom print, please leave us a review!"),
    (None, "[Important] Last day of our sale",
     "Everything is 20% off today only, including custom orders."),
    (None, "[Important] Your order has shipped",
     "Your order left today with DPD and should arrive Thursday. Tracking: 15501234567890."),
    (None, "[Important] Thank you!", "Thank you for your purchase, we hope you love your mug."),
    (None, "[Important] New collection",
     "Our new collection is live, with personalised mugs and custom prints."),
    (None, "[Important] Refund processed",
     "Your return arrived and we've refunded £24.99 to your card; allow 3-5 days."),
    (None, "[Important] Your review",
     "We noticed your review and would like to make things right."),
    (None, "[Important] Invoice",
     "Here's your invoice; the billing address is the one you entered at checkout."),
    (None, "[Important] About your delivery",
     "The listed price was wrong, so please request a cancellation and reorder."),
]


@pytest.mark.parametrize(("topic", "subject", "text"), CASES)
def test_classify_topic(rules: ContentRules, topic: str | None, subject: str, text: str) -> None:
    result = classify(rules, subject, text)
    assert result.tagged
    assert result.topic == topic, result.rule_ids
    assert result.legit is (topic is not None)
    if topic:
        assert all(rid.startswith("critical.") for rid in result.rule_ids)


def test_untagged_message_is_never_legit(rules: ContentRules) -> None:
    result = classify(rules, "Delivery date for your wardrobe",
                      "Please choose a delivery date: Monday or Tuesday?")
    assert result.topic == "delivery_scheduling"
    assert not result.tagged and not result.legit


def test_prohibited_message_can_still_be_about_a_critical_topic(rules: ContentRules) -> None:
    subject = "[Important] Photo for your custom portrait"
    text = ("To start the painting I need a clear photo of your dog. Please email it to my "
            "personal address, painter.jo@gmail.com, as photos get compressed here.")
    assert classify(rules, subject, text).legit
    assert evaluate(rules, subject, text).category == "off_platform_contact"


def test_quoted_buyer_text_does_not_make_a_message_critical(rules: ContentRules) -> None:
    text = ("Thanks, we've noted it.\n\n"
            "> Can we book a delivery slot? Someone will need to be home.\n")
    assert classify(rules, "[Important] Re: your order", text).topic is None


def test_critical_result_legit_property() -> None:
    assert CriticalResult(True, "customization", ("x.y",)).legit
    assert not CriticalResult(True, None, ()).legit
    assert not CriticalResult(False, "shipping_address", ("x.y",)).legit
