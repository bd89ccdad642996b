"""The development targets of scripts/eval-content, as a test.

Targets on the labelled corpus: >= 95% of `allowed` delivered, >= 90% of each prohibited
label refused (any category), and [Important] judged right on every labelled message.
The corpus lives outside the repository: ../shared/corpus/content, or $RELAY_CORPUS.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "eval-content"
CORPUS = Path(os.environ.get("RELAY_CORPUS")
              or Path(__file__).resolve().parents[2] / "shared" / "corpus" / "content")

pytestmark = pytest.mark.skipif(
    not (CORPUS / "labels.csv").is_file(),
    reason=f"content corpus not found at {CORPUS} (set RELAY_CORPUS to its directory)",
)


def _load_script() -> ModuleType:
    # the script has no .py suffix, so name the loader explicitly
    loader = importlib.machinery.SourceFileLoader("eval_content", str(SCRIPT))
    spec = importlib.util.spec_from_loader("eval_content", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_content"] = module  # dataclasses look their module up while defined
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    return _load_script().run(CORPUS)


def test_corpus_targets_are_met(report) -> None:
    failures = report.failures()
    assert not failures, "\n".join(failures)


def test_allowed_delivery_rate(report) -> None:
    allowed = report.by_label()["allowed"]
    refused = [(r.file, r.category, r.rule_ids) for r in allowed if not r.delivered]
    assert (len(allowed) - len(refused)) / len(allowed) >= 0.95, refused


@pytest.mark.parametrize("label", ["marketing", "cancellation_request",
                                   "feedback_manipulation", "off_platform_contact"])
def test_prohibited_refusal_rate(report, label: str) -> None:
    rows = report.by_label().get(label, [])
    if not rows:
        pytest.skip(f"no {label} messages in this corpus")
    missed = [(r.file, r.rule_ids) for r in rows if r.delivered]
    assert (len(rows) - len(missed)) / len(rows) >= 0.90, missed


def test_important_judged_right_on_every_message(report) -> None:
    wrong = [(r.file, r.tagged, r.topic, r.important_in_subject, r.important_legit)
             for r in report.rows if not r.important_right]
    assert not wrong


def test_every_labelled_message_was_read(report) -> None:
    assert len(report.rows) == len(list(CORPUS.glob("*.eml")))
