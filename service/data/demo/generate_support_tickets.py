"""Generate the bundled demo dataset: short customer-support messages to be labelled with one word.

The task suits a demo of local fine-tuning: SmolLM2-135M-Instruct, told the label set, mostly answers with a sentence
or a wrong label, while a few minutes of LoRA on a CPU teach it both the labels and the answer format.

Deterministic: the same seed writes the same bytes. Run from the repository root:
    python service/data/demo/generate_support_tickets.py
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYSTEM_PROMPT = (
    "Classify the customer message. Answer with exactly one label from: "
    "billing, refund, shipping, login, bug, cancel, feature."
)

PRODUCTS = ["Pro plan", "Team plan", "the mobile app", "the desktop app", "Basic plan", "the API", "the starter kit"]
DEVICES = ["iPhone", "Android phone", "Windows laptop", "Mac", "Chromebook", "iPad"]
FEATURES = ["dark mode", "CSV export", "a calendar view", "two-factor by SMS", "bulk editing", "offline mode", "tags"]
CARRIERS = ["UPS", "DHL", "FedEx", "the courier", "the post office"]
OPENERS = ["", "", "", "Hi, ", "Hello, ", "Hey there. ", "Good morning. ", "Hi team, "]
CLOSERS = ["", "", "", " Thanks.", " Please help.", " Thank you!", " Any update?", " This is urgent."]

TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {product} this month.",
        "My invoice {invoice} shows the wrong amount, it should be ${amount}.",
        "Why did my card get billed ${amount} on {date}?",
        "Can you update the VAT number on my invoices?",
        "The price of {product} went up without notice.",
        "I need a copy of invoice {invoice} for my accountant.",
        "My payment method expired, how do I change the card on file?",
        "There is an unknown charge of ${amount} on my statement.",
    ],
    "refund": [
        "I want my money back for {product}, it did not work for me.",
        "Please refund the ${amount} I paid on {date}.",
        "I cancelled within 14 days, when do I get my refund?",
        "The refund for order {order} still has not arrived.",
        "I returned the item from order {order}, please send the refund.",
        "Can I get a refund for the unused months of {product}?",
        "You promised a refund of ${amount} last week and nothing came.",
    ],
    "shipping": [
        "My order {order} has not arrived yet.",
        "The tracking number for order {order} does not work on the {carrier} site.",
        "Can you ship order {order} to a different address?",
        "{carrier} says the package was delivered but I have nothing.",
        "How long does delivery to Canada take?",
        "Order {order} arrived with a broken box and a missing part.",
        "My parcel has been stuck in customs since {date}.",
    ],
    "login": [
        "I cannot log in, it says my password is wrong.",
        "The password reset email never arrives.",
        "I lost my phone and cannot pass two-factor authentication.",
        "My account got locked after too many attempts.",
        "I changed my email and now I cannot sign in.",
        "The login page keeps sending me back to the start on my {device}.",
        "Someone else may have access to my account, I cannot get in.",
    ],
    "bug": [
        "{product} crashes every time I open settings on my {device}.",
        "The export button does nothing in {product}.",
        "I get error 500 when saving a report.",
        "Pages load forever on my {device} since the last update.",
        "Numbers in the dashboard are wrong after {date}.",
        "Uploading a file over 10 MB fails with a blank screen.",
        "The search in {product} returns no results even for exact names.",
    ],
    "cancel": [
        "Please cancel my subscription to {product}.",
        "I want to close my account and delete my data.",
        "How do I stop the automatic renewal of {product}?",
        "Cancel my plan at the end of this billing period.",
        "We are moving to another tool, please end our {product} contract.",
        "I no longer need {product}, stop my membership.",
    ],
    "feature": [
        "It would be great to have {feature} in {product}.",
        "Do you plan to add {feature}?",
        "Please consider adding {feature}, our team needs it.",
        "Could {product} support {feature} one day?",
        "A suggestion: {feature} would save us hours every week.",
        "Any roadmap for {feature} on the {device}?",
    ],
}
LABELS = list(TEMPLATES)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        product=rng.choice(PRODUCTS),
        device=rng.choice(DEVICES),
        feature=rng.choice(FEATURES),
        carrier=rng.choice(CARRIERS),
        amount=f"{rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        invoice=f"INV-{rng.randint(10000, 99999)}",
        order=f"#{rng.randint(100000, 999999)}",
        date=f"{rng.choice(['March', 'April', 'May', 'June', 'July'])} {rng.randint(1, 28)}",
    )


def make_example(label: str, rng: random.Random) -> dict:
    body = _fill(rng.choice(TEMPLATES[label]), rng)
    text = rng.choice(OPENERS) + body + rng.choice(CLOSERS)
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
            {"role": "assistant", "content": label},
        ]
    }


def generate(n_examples: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    labels = [LABELS[i % len(LABELS)] for i in range(n_examples)]  # balanced classes
    rng.shuffle(labels)
    return [make_example(label, rng) for label in labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=560)
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("support_tickets.jsonl"))
    args = parser.parse_args()
    rows = generate(args.examples, args.seed)
    args.out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} examples to {args.out}")


if __name__ == "__main__":
    main()
