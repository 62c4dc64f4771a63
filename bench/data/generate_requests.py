"""Writes the labelled request sets of the router: the held-out split and the tuning splits.

Files: ``requests_heldout.jsonl`` (measures), ``requests_{tune,dev,dev2}.jsonl`` (tune).

Each line is ``{"id", "text", "label", "family"}`` with label one of the request classes of
``routing/request_classes.toml`` (greeting, faq, short_classification, hard).

The two splits are built from disjoint template families: different sentence shapes, different
business domains and different vocabulary, so that a classifier tuned on one and measured on the
other is measured on requests it has not seen the like of. ``tests/test_routing_classifier.py``
pins the held-out file's SHA-256 so that it cannot drift. Rerunning this script reproduces the
files byte for byte.

History, for honesty: the "dev" family was the first held-out split. It was measured once
(short_classification 40/48 = 83 %, below the 90 % bar), and looking at its misses would have
leaked it into tuning, so it was demoted to a dev split and a second held-out family was written
and frozen before any prototype was changed. That one ("dev2") was then measured once after
tuning on tune + dev: faq 47/60, short_classification 22/36 (the payload of "label this: <text>"
dominated the embedding). It was demoted in turn, and the present "heldout" family (v3) was
written and frozen before the classifier was changed again.

    python bench/data/generate_requests.py
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

DATA_DIR = Path(__file__).parent
PER_CLASS = 60

Template = Callable[[random.Random], str]


def pick(rng: random.Random, options: list[str]) -> str:
    return options[rng.randrange(len(options))]


# --- dev family (the first held-out split; demoted, see the module docstring) ---

HO_NAMES = ["Priya", "Tomasz", "Aiko", "Mateo", "Grace", "Olu", "Sven", "Leila"]
HO_GREET_OPEN = ["Good evening", "Howdy", "Yo", "Greetings", "Hiya", "Morning all", "Salut",
                 "Hello hello", "Heyo", "Good afternoon"]
HO_GREET_TAIL = ["hope your day is going well", "nice to meet you", "long time no see",
                 "just popping in to say hi", "how have you been", "happy Friday",
                 "what's up", "pleasure to be here", "how's it going today"]
HO_BYE = ["Cheers, catch you later!", "Thanks a bunch, have a lovely weekend",
          "Alright, take care and talk soon", "That's all, many thanks, bye for now",
          "See ya!", "Much appreciated, goodnight"]


def ho_greeting(rng: random.Random) -> str:
    shape = rng.randrange(4)
    if shape == 0:
        return f"{pick(rng, HO_GREET_OPEN)}, {pick(rng, HO_GREET_TAIL)}!"
    if shape == 1:
        return f"{pick(rng, HO_GREET_OPEN)} {pick(rng, HO_NAMES)} here :)"
    if shape == 2:
        return pick(rng, HO_BYE)
    return f"{pick(rng, HO_GREET_OPEN)}! {pick(rng, HO_GREET_TAIL).capitalize()}?"


HO_FAQ_DOMAINS: dict[str, list[str]] = {
    "bank": ["the overdraft fee", "my debit card PIN", "a wire transfer abroad",
             "the savings account interest rate", "a lost credit card"],
    "airline": ["checked baggage allowance", "seat selection", "an infant on my lap",
                "the check-in deadline", "changing my flight date"],
    "gym": ["the monthly membership", "freezing my membership", "guest passes",
            "the pool schedule", "personal trainer sessions"],
    "library": ["borrowing e-books", "late return fines", "renewing a loan",
                "the reading room hours", "a replacement library card"],
}
HO_FAQ_SHAPES = [
    "How much is {x}?",
    "Can you tell me about {x}?",
    "Is there a limit on {x}?",
    "Who do I contact about {x}?",
    "What happens with {x} on public holidays?",
    "Quick question regarding {x} - how does it work?",
    "Do you offer {x} for students?",
    "Where can I find info on {x}?",
]


def ho_faq(rng: random.Random) -> str:
    topic = pick(rng, HO_FAQ_DOMAINS[pick(rng, sorted(HO_FAQ_DOMAINS))])
    return pick(rng, HO_FAQ_SHAPES).format(x=topic)


HO_CLS_ITEMS = [
    "the server room is flooding right now",
    "can we move the sync to next Tuesday",
    "your parcel could not be delivered, pay 2 EUR here",
    "el pedido llego roto",
    "the app crashes every time I upload a photo",
    "thanks for the quick fix, works great",
    "please cancel my subscription immediately",
    "the invoice total looks wrong",
]
HO_CLS_SHAPES = [
    "Tag the urgency (low/medium/high): \"{x}\"",
    "Which language is this written in? \"{x}\"",
    "Intent label for this support ticket, one word: {x}",
    "Is the following message phishing, yes or no? {x}",
    "Pick a category - billing, bug, scheduling, other: {x}",
    "Rate the tone from 1 to 5: '{x}'",
]


def ho_classification(rng: random.Random) -> str:
    return pick(rng, HO_CLS_SHAPES).format(x=pick(rng, HO_CLS_ITEMS))


HO_HARD_LEGAL = [
    ("residential lease", "The Lessee shall maintain the Premises in good repair and shall "
     "indemnify the Lessor against all claims arising from the Lessee's occupancy. Rent shall "
     "be payable monthly in advance, and a late charge of five percent shall accrue thereafter."),
    ("mutual NDA", "Each Receiving Party shall hold the Disclosing Party's Confidential "
     "Information in strict confidence for a period of five (5) years following disclosure, "
     "save for information that becomes public through no fault of the Receiving Party."),
    ("employment agreement", "The Employee agrees not to solicit clients of the Company for "
     "eighteen months after termination. Severance equal to three months' base salary is "
     "payable upon termination without cause, conditional on a signed release."),
    ("share purchase agreement", "The Seller warrants that the Target has no undisclosed "
     "liabilities exceeding EUR 250,000. Any breach of warranty claims shall be subject to a "
     "basket of 1% of the Purchase Price and a cap of 20% thereof."),
    ("supply contract", "Title and risk pass to the Buyer upon delivery Incoterms DAP. Force "
     "majeure suspends performance for up to 120 days, after which either party may rescind "
     "without penalty; liquidated damages accrue at 0.5% per week of delay."),
    ("data processing addendum", "The Processor shall notify the Controller of a personal "
     "data breach without undue delay and in any event within 48 hours, and shall not engage "
     "sub-processors without prior specific written authorisation."),
]
HO_HARD_TECH = [
    ("RFC section on TCP congestion control", "When a retransmission timeout occurs, the "
     "sender sets ssthresh to max(FlightSize / 2, 2*SMSS) and cwnd to one full-sized segment, "
     "then re-enters slow start until cwnd reaches ssthresh."),
    ("device driver documentation", "The DMA engine requires descriptors aligned to 64 bytes; "
     "the driver must set the OWN bit after writing the buffer address and length, and issue a "
     "memory barrier before ringing the doorbell register at offset 0x40."),
    ("datasheet excerpt for a buck converter", "The converter operates at 2.2 MHz with an "
     "input range of 4.5 V to 28 V; the compensation network on COMP sets the crossover "
     "frequency, and the soft-start capacitor limits inrush current at power-up."),
    ("OpenAPI specification", "POST /v2/orders accepts an idempotency key header; a 409 is "
     "returned when the key was reused with a different body, and pagination of GET /v2/orders "
     "uses an opaque cursor valid for fifteen minutes."),
    ("Kubernetes operator design note", "The reconciler watches custom resources and "
     "requeues with exponential backoff on conflict; finalizers block deletion until external "
     "volumes are detached, and leader election uses a Lease object renewed every 10 s."),
    ("GPU kernel tuning guide", "Occupancy is limited by registers per thread; tiling the "
     "matrix into 128x128 blocks staged in shared memory avoids bank conflicts when the inner "
     "dimension is padded by one element, and async copies overlap loads with compute."),
]
HO_HARD_ASKS_LEGAL = [
    "Go through this {d} clause by clause and flag every obligation that survives "
    "termination, with the risk to us:\n\n{t}",
    "I need a redline memo on the following {d}: identify caps, baskets, indemnities and any "
    "ambiguous wording.\n{t}",
    "Compare the liability allocation in this {d} against market standard and propose "
    "counter-language. Text: {t}",
    "Draft a negotiation position paper on this {d}. Where is the exposure, and what would "
    "you strike?\n\n{t}",
]
HO_HARD_ASKS_TECH = [
    "Walk me through this {d} step by step and derive what happens in the failure cases:\n{t}",
    "Write an implementation plan with edge cases, based on the following {d}:\n\n{t}",
    "Critically review this {d}; list inconsistencies and the tests you would write. {t}",
    "Reason carefully about this {d} and estimate the performance bottlenecks with "
    "numbers:\n{t}",
]


def ho_hard(rng: random.Random) -> str:
    if rng.random() < 0.5:
        doc, text = HO_HARD_LEGAL[rng.randrange(len(HO_HARD_LEGAL))]
        return pick(rng, HO_HARD_ASKS_LEGAL).format(d=doc, t=text)
    doc, text = HO_HARD_TECH[rng.randrange(len(HO_HARD_TECH))]
    return pick(rng, HO_HARD_ASKS_TECH).format(d=doc, t=text)


# --- dev2 family (the second held-out split; demoted, see the module docstring) ---

H2_GREET = ["Hey hey, anybody around?", "What's good", "Top of the morning to you",
            "Hi folks, first time here", "G'day mate", "Evening! Hope all's well",
            "Oh hi :) didn't expect a reply so fast", "Hallo zusammen", "Sup",
            "Hi hi! Happy Monday", "Cheerio, that's me done for today",
            "Thx, appreciate it, ttyl", "Namaste!", "Hey you, how's life treating you",
            "Well hello again, stranger", "Bye bye and thank you kindly"]
H2_GREET_EMOJI = ["", " 👋", " 🙂", "!!"]


def h2_greeting(rng: random.Random) -> str:
    return pick(rng, H2_GREET) + pick(rng, H2_GREET_EMOJI)


H2_FAQ_TOPICS = ["my mobile data allowance", "roaming charges in Canada", "late hotel check-out",
                 "pets in the hotel rooms", "the application deadline for the MSc",
                 "tuition payment in instalments", "my car insurance excess",
                 "adding a named driver", "the delivery radius of your kitchen",
                 "allergen information on the menu"]
H2_FAQ_SHAPES = ["Hi, what's the deal with {x}?", "Could you explain {x} please?",
                 "Need to know about {x}, thanks", "Are there any charges for {x}?",
                 "When does {x} apply?", "{x} - what are the rules?"]


def h2_faq(rng: random.Random) -> str:
    text = pick(rng, H2_FAQ_SHAPES).format(x=pick(rng, H2_FAQ_TOPICS))
    return text[0].upper() + text[1:]


H2_CLS_ITEMS = ["the delivery guy was rude but the food was cheap",
                "oh great, another Monday meeting, just what I needed",
                "my laptop won't connect to the VPN since this morning",
                "I'd like to request parental leave from June",
                "can you send me a quote for 500 licenses",
                "you people are useless, fix it now"]
H2_CLS_SHAPES = ["Does this review mention price? {x}", "Toxic or not toxic: {x}",
                 "Assign a priority P1-P4 to: {x}",
                 "Extract the emotion (joy, anger, fear, neutral): \"{x}\"",
                 "Is this sentence sarcastic? {x}",
                 "Route to a department - HR, IT or Sales: {x}"]


def h2_classification(rng: random.Random) -> str:
    return pick(rng, H2_CLS_SHAPES).format(x=pick(rng, H2_CLS_ITEMS))


H2_HARD_DOCS = [
    ("insurance policy wording", "Cover excludes loss arising from gradual deterioration or "
     "wear and tear. The insurer may avoid the policy for non-disclosure of a material fact, "
     "and the aggregate limit applies across all claims in the period of insurance."),
    ("loan facility agreement", "An Event of Default occurs if the Borrower's leverage ratio "
     "exceeds 3.5:1 on any test date; the Agent may then accelerate all outstanding "
     "Utilisations, and mandatory prepayment applies on a change of control."),
    ("franchise agreement", "The Franchisee shall pay a royalty of 6% of gross sales and "
     "contribute 2% to the marketing fund; the Franchisor may terminate on 30 days' notice "
     "if brand standards are not cured, with a two-year non-compete in the territory."),
    ("compiler intermediate representation reference", "Each basic block ends in exactly one "
     "terminator; phi nodes must appear first and list one incoming value per predecessor, "
     "and SSA values dominate all of their uses."),
    ("Raft consensus paper excerpt", "A candidate wins an election if it receives votes from "
     "a majority of servers for the same term; a leader never overwrites entries in its log, "
     "and an entry is committed once replicated on a majority."),
    ("FPGA timing constraints guide", "Define the primary clocks with create_clock, declare "
     "asynchronous clock groups for unrelated domains, and set multicycle paths on the slow "
     "enable-gated datapaths to avoid false setup violations."),
]
H2_HARD_ASKS = [
    "Break down the following {d} for a board briefing, covering every material risk and "
    "how it interacts with the others:\n{t}",
    "Our counsel is away. Interpret this {d} thoroughly and tell me what we are committing "
    "to: {t}",
    "Produce a rigorous, section-by-section analysis of this {d}, citing the exact "
    "wording.\n\n{t}",
    "Using this {d}, reason through three tricky scenarios and what the text implies in each: "
    "{t}",
]


def h2_hard(rng: random.Random) -> str:
    doc, text = H2_HARD_DOCS[rng.randrange(len(H2_HARD_DOCS))]
    return pick(rng, H2_HARD_ASKS).format(d=doc, t=text)


# --- held-out family (v3: written and frozen after dev2 was measured, before the classifier
# --- was changed) ---------------------------------------------------------------------------

H3_GREET = ["Hiya everyone, hope you're all doing great", "Good day to you", "Ahoy there!",
            "Hey, it's me again", "Bonjour! Ça va?", "Morning! Coffee kicked in yet?",
            "Hellooo", "Heya, how's your week been", "Right, that's everything, ta-ra!",
            "Cheers mate, you're a star", "Aloha", "Greetings and salutations",
            "Okay bye, thanks for the help!", "Hey, just wanted to say thanks",
            "Yo yo yo", "Hi! Lovely weather today, isn't it"]


def h3_greeting(rng: random.Random) -> str:
    text = pick(rng, H3_GREET)
    return text.lower() if rng.random() < 0.3 else text


H3_FAQ_TOPICS = ["my electricity bill estimate", "switching to a green energy tariff",
                 "the young driver surcharge on rentals", "one-way car hire",
                 "rescheduling a dental check-up", "NHS dental charges",
                 "booking cinema tickets for a group", "the senior discount on cinema tickets",
                 "a monthly bus pass", "refunds for a cancelled train"]
H3_FAQ_SHAPES = ["I have a question about {x}.", "What should I know about {x}?",
                 "Any info on {x}?", "What's your policy on {x}?", "How do I sort out {x}?",
                 "Tell me the basics of {x}, please"]


def h3_faq(rng: random.Random) -> str:
    return pick(rng, H3_FAQ_SHAPES).format(x=pick(rng, H3_FAQ_TOPICS))


H3_CLS_ITEMS = ["you won't BELIEVE what this celebrity did next",
                "stainless steel 12-piece cookware set with glass lids",
                "your OTP is 449201, do not share it",
                "the refund arrived, but two weeks late",
                "our payroll run failed for the Berlin office",
                "call me on 07700 900123 about the flat"]
H3_CLS_SHAPES = ["Is this headline clickbait? {x}", "Categorize the product: {x}",
                 "Spam filter verdict for this SMS: {x}", "Sentiment score -1, 0 or 1: {x}",
                 "Which team should handle this: {x}",
                 "Flag whether this contains personal data: {x}"]


def h3_classification(rng: random.Random) -> str:
    return pick(rng, H3_CLS_SHAPES).format(x=pick(rng, H3_CLS_ITEMS))


H3_HARD_DOCS = [
    ("clinical trial protocol", "Subjects with eGFR below 45 mL/min are excluded; the primary "
     "endpoint is change in HbA1c at week 26, analysed by MMRM, and the DSMB may stop the "
     "study early for efficacy at the pre-specified interim analysis."),
    ("construction contract", "The Contractor is entitled to an extension of time for "
     "delays caused by the Employer, provided notice is given within 28 days; delay damages "
     "are capped at 10% of the Contract Price, and the Engineer's determination is final."),
    ("payment card security standard excerpt", "Stored cardholder data must be rendered "
     "unreadable using strong cryptography; access to the cardholder data environment "
     "requires multi-factor authentication and quarterly segmentation testing."),
    ("TLS 1.3 handshake specification", "The client sends key shares in the ClientHello; if "
     "the server selects a group for which no share was sent, it responds with a "
     "HelloRetryRequest, and early data is rejected unless the PSK allows it."),
    ("operating system scheduler documentation", "Each runnable task accrues virtual runtime "
     "weighted by its nice value; the scheduler picks the leftmost node of a red-black tree, "
     "and load balancing migrates tasks between run queues across NUMA domains."),
    ("query planner internals note", "The planner estimates selectivity from histograms, "
     "chooses between hash join and nested loop by estimated cost, and pushes predicates "
     "below joins unless they reference outer-join nullable columns."),
]
H3_HARD_ASKS = [
    "Please do a deep review of this {d} and spell out obligations, exceptions and the "
    "practical impact on our team:\n{t}",
    "I'm preparing for an audit. Interpret the following {d} in detail and list what evidence "
    "we would need: {t}",
    "Give me an expert-level explanation of this {d}, including subtle corner cases:\n\n{t}",
    "Contrast the approach in this {d} with the alternatives and justify which is better for "
    "us. {t}",
]


def h3_hard(rng: random.Random) -> str:
    doc, text = H3_HARD_DOCS[rng.randrange(len(H3_HARD_DOCS))]
    return pick(rng, H3_HARD_ASKS).format(d=doc, t=text)


# --- tune family -----------------------------------------------------------------------------

TU_GREET = ["hi", "hello", "hey there", "hi, how are you?", "good morning!", "hello, anyone here?",
            "hey! nice to chat with you", "thanks, bye!", "hi again", "hello friend",
            "thank you so much, goodbye", "hey, good to see you"]


def tu_greeting(rng: random.Random) -> str:
    text = pick(rng, TU_GREET)
    return text.capitalize() if rng.random() < 0.5 else text


TU_FAQ_TOPICS = ["reset my password", "track my order", "return an item", "change my email",
                 "update my shipping address", "get a refund", "contact customer support",
                 "delete my account", "apply a discount code", "upgrade my plan"]
TU_FAQ_SHAPES = ["How do I {x}?", "How can I {x}?", "What is the way to {x}?",
                 "Is it possible to {x} online?", "where do i go to {x}"]
TU_FAQ_FACTS = ["What are your opening hours?", "Do you ship internationally?",
                "What payment methods do you accept?", "How long does delivery take?",
                "What is your refund policy?", "Is there a free trial?"]


def tu_faq(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return pick(rng, TU_FAQ_FACTS)
    return pick(rng, TU_FAQ_SHAPES).format(x=pick(rng, TU_FAQ_TOPICS))


TU_CLS_ITEMS = ["I absolutely loved this movie", "worst purchase I've ever made",
                "WIN A FREE IPHONE, click now", "meeting notes attached for review",
                "the battery life is okay I guess", "stocks rallied after the earnings report",
                "the team won the championship final", "new vaccine shows strong results"]
TU_CLS_SHAPES = ["Classify the sentiment of: {x}", "Positive or negative? {x}",
                 "Is this spam? \"{x}\"", "What is the topic of this headline: {x}",
                 "Label as spam or ham: {x}", "Sentiment (positive/neutral/negative): {x}"]


def tu_classification(rng: random.Random) -> str:
    return pick(rng, TU_CLS_SHAPES).format(x=pick(rng, TU_CLS_ITEMS))


TU_HARD_DOCS = [
    ("software license agreement", "Licensee may not sublicense the Software. Licensor's "
     "aggregate liability shall not exceed the fees paid in the twelve months preceding the "
     "claim. This Agreement terminates automatically upon Licensee's material breach."),
    ("master services agreement", "The Supplier shall meet the service levels in Schedule 2; "
     "service credits are the Customer's sole remedy for availability failures, and either "
     "party may terminate for convenience on ninety days' written notice."),
    ("system design document", "The ingestion service writes events to a partitioned log; "
     "consumers checkpoint offsets every 5 seconds, and exactly-once delivery is achieved by "
     "idempotent writes keyed on the event id into the sharded store."),
    ("technical whitepaper on database replication", "Followers apply the write-ahead log "
     "asynchronously; on leader failure, the follower with the highest applied LSN is "
     "promoted, and clients retry writes after a fencing token check."),
]
TU_HARD_ASKS = [
    "Extract all parties, obligations, termination conditions and liability limits from this "
    "{d}:\n{t}",
    "Summarize the key risks in the following {d} and explain each one in detail: {t}",
    "Parse this {d} into a structured JSON of clauses with their conditions.\n\n{t}",
    "Analyze this {d} and explain the architecture trade-offs and failure modes: {t}",
    "Explain the consequences of each section of this {d} for our compliance team:\n{t}",
]


def tu_hard(rng: random.Random) -> str:
    doc, text = TU_HARD_DOCS[rng.randrange(len(TU_HARD_DOCS))]
    return pick(rng, TU_HARD_ASKS).format(d=doc, t=text)


FAMILIES: dict[str, dict[str, Template]] = {
    "heldout": {"greeting": h3_greeting, "faq": h3_faq,
                "short_classification": h3_classification, "hard": h3_hard},
    "dev2": {"greeting": h2_greeting, "faq": h2_faq,
                "short_classification": h2_classification, "hard": h2_hard},
    "dev": {"greeting": ho_greeting, "faq": ho_faq,
                "short_classification": ho_classification, "hard": ho_hard},
    "tune": {"greeting": tu_greeting, "faq": tu_faq,
             "short_classification": tu_classification, "hard": tu_hard},
}


def build_split(family: str, seed: int) -> list[dict[str, str]]:
    """Up to ``PER_CLASS`` distinct requests per class from one template family."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for label, template in FAMILIES[family].items():
        seen: set[str] = set()
        for _ in range(PER_CLASS * 20):
            if len(seen) == PER_CLASS:
                break
            text = template(rng)
            if text not in seen:
                seen.add(text)
                rows.append({"id": f"{family}-{label}-{len(seen):03d}", "text": text,
                             "label": label, "family": family})
    return rows


def write_split(family: str, seed: int) -> Path:
    path = DATA_DIR / f"requests_{family}.jsonl"
    rows = build_split(family, seed)
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    for family, seed in (("heldout", 17), ("dev2", 13), ("dev", 7), ("tune", 11)):
        path = write_split(family, seed)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}  {sum(1 for _ in path.open())} rows  sha256={digest}")
