"""Writes the labelled request sets of the router: the held-out split and the tuning splits.

Files: ``requests_heldout.jsonl`` (measures the router's classifier) and
``routing/request_examples.jsonl`` (the tune, dev, dev2 and dev3 families: what the shipped
classifier learns from, beside the examples of ``routing/request_classes.toml``).

Each line is ``{"id", "text", "label", "family"}`` with label one of the request classes of
``routing/request_classes.toml`` (greeting, faq, short_classification, hard).

The held-out and tuning splits come from disjoint families: different sentence shapes, different
business domains and different vocabulary, so that a classifier tuned on one and measured on the
other is measured on requests it has not seen the like of. ``tests/test_routing_classifier.py``
pins the held-out file's SHA-256 so that it cannot drift. Rerunning this script reproduces the
files byte for byte.

History, for honesty: the "dev" family was the first held-out split. It was measured once
(short_classification 40/48 = 83 %, below the 90 % bar), and looking at its misses would have
leaked it into tuning, so it was demoted to a dev split and a second held-out family was written
and frozen before any prototype was changed. That one ("dev2") was then measured once after
tuning on tune + dev: faq 47/60, short_classification 22/36 (the payload of "label this: <text>"
dominated the embedding). It was demoted in turn, and a third held-out family (v3) was written
and frozen before the classifier was changed again. v3 was measured once: greeting 93.8 %, faq
95.0 %, short_classification 97.2 %, hard 21/24 = 87.5 % (the misses: payment-card-standard
documents read as small tasks). It was demoted to "dev3", and the present "heldout" family (v4)
was written and frozen before the classifier was changed. v4 is written by hand as whole
requests, one pool per class larger than ``PER_CLASS``, so its 60 distinct requests per class
(hard included) share no template and are no near-duplicates of one another; its sentence shapes,
business domains and vocabulary come from none of tune, dev, dev2, dev3 or the prototypes of
``routing/request_classes.toml``. The pool entries the seed leaves out are held-out text too.

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


# --- dev3 family (v3, the third held-out split; demoted, see the module docstring) -----------

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


# --- held-out family (v4: written and frozen after dev3 was measured, before the classifier
# --- was changed; whole requests, drawn without templates, see the module docstring) ---------

H4_GREET = [
    "hola 😊", "ciao ciao!", "oi, tudo bem?", "moin moin", "hej hej 🌞", "merhaba", "こんにちは！",
    "안녕하세요", "cześć, co tam?", "hoi!", "gud nite, thnx for today", "heyyy 🤗",
    "thnx a milion!!", "hullo bot", "ok ty!", "ty ty 🙏", "thank u sm", "tysm!!! 💯",
    "perfect, exactly what I needed. grateful!", "you're a lifesaver 🙌", "you rock, seriously",
    "legend. thank you", "big appreciation from the whole warehouse crew ☕", "gn 🌙",
    "nighty night", "ok logging off now, later!", "brb, grabbing lunch", "gotta run, talk tmrw",
    "signing off for the weekend ✌️", "farewell, kind machine", "adios amigo", "peace out",
    "later gator 🐊", "gm gm ☀️", "knock knock 🚪 is this thing on?",
    "testing 1 2 3, can u hear me lol", "new here 😅 just waving hello", "what's cooking, bot?",
    "hope things are calm on your side today 😊", "happy new year!! 🎉",
    "merry christmas to you and the dev team 🎄", "happy diwali ✨", "eid mubarak!", "you there?",
    "ping", "oh nice it works now, thank youuu", "danke schön!", "merci beaucoup 🙏",
    "gracias, muy amable", "obrigado!!", "arigato 😄", "nice talking to you, until next time",
    "until tomorrow then 👍", "okay done here, grateful for the patience",
    "sorry for spamming u today haha, thanks for putting up with me", "sleep well, chatbot 😴",
    "what's new with you?", "how do you do?", "pleased to make your acquaintance",
    "hiiii, survived another tuesday 😩", "howzit!", "kia ora", "jambo! 😊", "shalom",
    "as-salamu alaykum", "g'morning sunshine", "rise and shine, bot ☀️", "ttfn!",
    "catch ya on the flip side", "toodle-oo!", "au revoir", "sayonara 🫡",
    "okie dokie, sorted. thank you!!", "10/10 would chat again, thanks bot", "you're the best 💖",
    "love this bot ❤️", "quick hello from the night shift in Manila 🌃", "aight, im out ✌️",
    "long day. hello, I guess 🙃", "good to be back!", "it's been ages!",
    "hello from a very rainy Glasgow ☔", "waving from Nairobi 🇰🇪",
]

H4_FAQ = [
    "does the unlimited plan still throttle after 50GB or is it actually unlimited",
    "Can I keep my current number if I switch to you from another network?",
    "is there 5g coverage in rural cornwall yet?",
    "my esim isn't showing up after I scanned the QR code, is that normal for the first hour?",
    "What's the cut-off time for same-day SEPA transfers?",
    "will my joint account holder get a separate card automatically",
    "Are Apple Pay payments covered by your purchase protection?",
    ("mortgage overpayments: how much can I overpay each year before early repayment "
     "charges kick in?"),
    "Does my ISA allowance reset on 6 April or on 1 January?",
    "why do you need my payslips to raise my credit limit??",
    ("If we go over our seat count on the Team plan, do you bill automatically or block new "
     "invites?"),
    "does SSO come with the Business tier or only Enterprise",
    "what's the API rate limit on the free tier? keep getting 429s",
    "Can invoices show our VAT number? our finance team insists",
    "export all my notes as markdown before I cancel - possible?",
    "do you store customer data in an EU region?", "Is two-factor mandatory for admins now?",
    "Can I bring a folding bike on the Eurostar?",
    "visa on arrival for Indonesia with a Kenyan passport, possible?",
    "What documents do I need to renew a passport for a child under 16?",
    "how long is a provisional driving licence valid",
    "Do I need to re-register to vote after moving flats in the same city?",
    "is child benefit paid every 4 weeks or monthly?",
    "my council tax band looks too high, can I appeal and by when?",
    "when is green bin collection over christmas",
    "do smart meters work in flats where the meter is in the basement?",
    "why did my water direct debit go up by £12",
    "social tariff for broadband if I'm on universal credit, does that exist?",
    "Does my health plan cover physio without a GP referral?",
    "Are pre-existing conditions covered after the waiting period, and how long is that period?",
    "can I add my newborn to my policy, and by when?",
    "is a telehealth appointment billed as a specialist visit or a primary care copay?",
    "ER visit abroad at an out-of-network hospital... do I get reimbursed?",
    "Does the 30-night mattress trial include free pickup if I send it back?",
    "do u price match amazon", "Can I use two gift cards on one purchase?",
    "When does the Black Friday sale start for app users?",
    "Are your trainers true to size or should I size up?",
    "Is assembly included when I buy the wardrobe?",
    "why was I charged a cleaning fee after my ride? nothing was spilled",
    "Can I schedule a ride to the airport 3 days ahead?",
    "does the annual streaming plan allow 4K on two TVs at the same time",
    "Will downloaded episodes still play offline if my subscription lapses?",
    "which countries is the full catalogue available in",
    "are sunday grocery slots a thing in leeds? 🥦",
    "Can the courier leave parcels in my safe place when I'm not home?",
    "is crypto staking income reported to the tax office automatically",
    "What's the minimum withdrawal in BTC?",
    "do you charge for charging? I mean the EV chargers in your car parks ⚡",
    "if the resort shuts for lack of snow, do I get days back on my season pass?",
    "Do kids under 5 ride the ferry for free?",
    "can i change the name on a concert ticket i bought for my sister",
    "Are museum tickets valid all day or only for the time slot?",
    "how early should I show up for a walk-in flu jab at the pharmacy",
    "Can my prescription be refilled early if I'm travelling abroad for a month?",
    "do the vets on your pet plan do house calls for cats",
    "Is a coworking day pass valid at any location or just the one I bought it for?",
    "is accidental screen damage covered by the phone protection add-on?",
    "does the hotel run a shuttle from the train station",
    "Are international students allowed to work part-time during term?",
    "What's the grace period on my car loan if a payment bounces?",
    "do my air miles expire if I don't fly for a year?",
    "hi! is the 25% pension lump sum always tax free?",
    "can my landlord keep the deposit for normal wear and tear?",
    "what time does the DMV open on saturdays?",
    "what's the fee for a new residence permit card after it was stolen?",
    "Do you accept PayPal for business invoices?",
    "Why is my broadband slower in the evenings, is that a known thing on the basic package?",
    "can I pause my meal kit for two weeks while on holiday 🏖️",
    "will my home insurance premium go up if I claim for the burst pipe?",
    "new credit card - do I get a cooling-off period if I change my mind?",
    "Does the e-signature plan include an audit trail for each document?",
    "can contractors clock in through the payroll app without a full licence",
]

H4_CLS = [
    "whats the sentiment of this one: 'thank youuu so much!!'",
    "positive, negative or mixed? → hello, is this the right place to ask about my bill?",
    "Reply with only POS, NEG or NEU.\nText: the hotel was fine, the breakfast was not",
    ("keep or junk? 'Congratulations!! you've been selected for a $500 supermarket voucher, "
     "claim within 24h'"),
    ("Return {\"label\": \"question\" | \"request\" | \"feedback\"} for: \"can u add an "
     "export to excel button\""),
    ("Which fits best - complaint, compliment, question or other? Input: 'Your team sorted "
     "my visa paperwork in two days, unreal'"),
    "one word, what's the mood of this: 'ugh, rain again and the tram is late'",
    "is this customer happy? just yes/no pls: 'it works, I guess, after 3 calls'",
    "lang id only, no explanation: 'dziękuję bardzo, do widzenia'",
    ("Message from our shared inbox: \"Hope you are well and enjoying the sunshine!\" - is "
     "it small talk, a sales pitch or a support question? Answer with one of the three."),
    ("bucket this app review into UI, performance, pricing or other: 'love the new look but "
     "it drains my battery like crazy'"),
    "Current customer or prospect? 'we're evaluating tools like yours for a 40-person team'",
    ("Does this email need a human reply (yes/no)? 'Auto-confirmation: your webinar seat is "
     "reserved.'"),
    "language and sentiment, two words max: 'que servicio tan lento, nunca más'",
    "safe for work? y/n - 'check out this hilarious cat video lol'",
    ("Hate speech check, answer none / mild / severe: 'people from that town can't drive, "
     "everyone knows it'"),
    "question or statement: 'i cant find my iban anywhere in the app'",
    ("Which product line is this feedback about - mobile app, web dashboard or API? "
     "'webhooks keep timing out after 10s'"),
    "score the formality 0-2 (0 = very casual): 'yo can u send the deck before 3'",
    "fraud risk low/med/high for this payment note: 'gift cards x10, urgent, boss said pay today'",
    "News or opinion piece? 'Why every city should ban cars from its centre by 2030'",
    "Is this a complaint? y/n: 'Thanks for nothing. Waited three weeks for a callback.'",
    "Guess the star rating (1-5), number only: 'decent blender, loud as a jet engine though'",
    ("intent → cancel / upgrade / downgrade / billing_question. msg: 'what would I pay if I "
     "moved to the cheaper tier next month?'"),
    "Would a moderator remove this comment? 'this take is so bad it's almost impressive'",
    "sentiment of these emojis only: 😡😡😡🙄",
    ("Genre label for this blurb: 'A detective in 1920s Shanghai hunts a killer who leaves "
     "jade coins at every scene.'"),
    "Remote, hybrid or on-site? 'Team sits in Rotterdam, two office days a week expected'",
    ("Real bank or scam? 'Dear client your acct is on hold, verify identity at "
     "secure-acct-verify.co'"),
    "Urgent or can it wait? 'fire alarm test at 3pm, no need to leave the building'",
    "Label it greeting / question / complaint: 'a very good morning to the whole team!'",
    "Churn signal? yes/no: 'honestly thinking about switching providers when the contract ends'",
    ("Which one: sports, politics, tech or entertainment? 'Verstappen takes pole in a "
     "rain-soaked Suzuka qualifying'"),
    "medical or non-medical query: 'can I take ibuprofen with my morning coffee?'",
    ("duplicate of 'login screen freezes'? new ticket: 'can't get past sign-in, it just "
     "spins forever' - answer dup / not dup"),
    "Gender-neutral wording, yes or no: 'each engineer must bring his own laptop'",
    ("Readability easy / medium / hard: 'Notwithstanding the foregoing, the indemnitor's "
     "obligations shall survive expiry.'"),
    ("one label (legal, finance, HR, engineering) for this email subject: 'Q3 accruals – "
     "please review by Fri'"),
    "certain or uncertain? 'I think the shipment might arrive Monday, not sure'",
    "Formal or informal: 'Dear Sir or Madam, I am writing to enquire about the vacancy.'",
    "venting or actionable? one word: 'every single update makes this app worse, why do I bother'",
    "what kind of message is 'byeee see u tmrw 😘' - greeting, farewell or neither?",
    "serious or joking? 'five stars, only caught fire twice'",
    ("Spoken language in this voicemail transcript? 'ja hallo, ich rufe wegen der Rechnung "
     "vom März an'"),
    "British or American English: 'I'll put the trash out on the sidewalk before the holidays'",
    "food, service or ambience - what's this review about: 'waiter forgot us for 40 minutes'",
    "Would 'what the heck is going on with my account' pass a profanity filter? yes/no",
    "is the user asking for a human agent? 'can i talk to a real person plz'",
    "bug report or feature request? 'would be cool if dark mode followed the OS setting'",
    "passive-aggressive or fine? 'Per my last email, the file is attached.'",
    "human or bot-written? 'Great place great food great staff great price great'",
    "✅ if this confirms the appointment, ❌ if not: 'see you thursday at 10 then!'",
    "thank-you note or complaint? 'thanks so much for the help yesterday, really appreciated it'",
    "intent category (pricing / support / sales): 'how much is the family plan per month?'",
    ("Sort into travel, food, finance or health: 'my flight got cancelled and the airline "
     "won't pick up'"),
    "PII type in this, email / phone / none: 'reach me at j.doe@example.org after 6'",
    "Is this reply respectful? yes/no: 'nobody asked for your opinion, Karen'",
    "lowercase single-word topic tag for this forum title: 'best budget tent for alpine camping?'",
    "left, right or centre? 'cut taxes, shrink the state, let people keep what they earn'",
    ("true/false: this is an auto-reply. 'I am out of the office until 14 May with limited "
     "access to email.'"),
    "Severity S1–S4 for: 'checkout returns 500 for every EU customer'",
    ("satisfied or unsatisfied, judging by this closing chat line: 'ok whatever, ill figure "
     "it out myself'"),
    "cat, dog or other? caption: 'tiny floof asleep on my keyboard again'",
    "hi!! 😊 ← mood of this message? pos/neg/neutral",
    "sentiment pls 🙏 'double charged AGAIN, third time this year'",
    ("Which FAQ section fits (accounts, payments, shipping, other)? 'where's the button to "
     "close my account'"),
    "Listed under Electronics - right category? y/n: 'Organic cotton baby bodysuit, 3-pack'",
    "legit or scam: 'Hi mum, this is my new number, can you send £200 for rent? x'",
    "slang, neutral or formal register: 'that gig was lowkey fire ngl'",
    "code or prose? 'SELECT name FROM staff WHERE dept = 4'",
    "which language, and formal or informal? 'Vous pourriez m'envoyer la facture ?'",
    "emotion, 3 words max: 'finally got the keys to our first flat!!!'",
    "chit-chat or on-topic? 'hey bot, how's your day going?'",
]

H4_HARD = [
    ("can you go through this warehouse lease clause and tell me if we're on the hook for "
     "the roof? landlord says yes, I say no.\n"
     "\n"
     "14.2 Repairs. The Tenant shall keep the interior of the Unit, including all doors, "
     "windows, loading bays and mechanical installations serving the Unit exclusively, in "
     "good and substantial repair. The Landlord shall repair the structure and roof of the "
     "Building, the cost of which shall be recoverable through the Service Charge save to "
     "the extent caused by an Insured Risk. Where damage results from the Tenant's racking "
     "or forklift operations, the Tenant shall reinstate at its own cost within 20 Working "
     "Days of written notice, failing which the Landlord may enter, carry out the works and "
     "recover the cost as a debt."),
    ("Clause 5 (Turnover Rent). In addition to the Base Rent the Tenant shall pay 8% of "
     "Gross Turnover exceeding the Threshold of £420,000 in each Turnover Year. Gross "
     "Turnover excludes VAT, staff discounts and online sales fulfilled from a location "
     "other than the Premises, but includes orders placed online and handed over at the "
     "Premises. The Tenant shall deliver an auditor's certificate within 90 days of each "
     "Turnover Year end; if the certified figure exceeds the reported figure by more than "
     "2%, the Tenant bears the cost of the audit.\n"
     "\n"
     "We run a shop where a lot of people pick up online orders. Model how this clause "
     "bites in three scenarios (turnover 380k / 500k / 900k, with 30% of it picked up in "
     "store) and tell me which definitions are ambiguous enough to fight over."),
    ("Here's the NDA the acquirer sent us. I'm the founder, not a lawyer. What am I "
     "actually agreeing to, and which bits would you push back on?\n"
     "\n"
     "2. Use of Evaluation Material. The Recipient shall use the Evaluation Material solely "
     "for the purpose of evaluating the Proposed Transaction and shall not, without the "
     "Company's prior written consent, disclose it to any person other than its "
     "Representatives who need to know it for that purpose.\n"
     "3. Non-Solicitation. For 24 months from the date hereof the Recipient shall not, "
     "directly or indirectly, solicit for employment any officer or employee of the Company "
     "with whom it had contact in connection with the Proposed Transaction, provided that "
     "general advertisements not targeted at such persons shall not breach this clause.\n"
     "4. Standstill. For 12 months the Recipient shall not acquire, or offer to acquire, "
     "any voting securities of the Company.\n"
     "7. No Obligation. Neither party is bound to proceed with any transaction until a "
     "definitive agreement is executed."),
    ("SERVICE LEVEL: Monthly Uptime Percentage of at least 99.95% for the Production "
     "Environment, measured per calendar month excluding Scheduled Maintenance (max 4 "
     "hours/month, notified at least 72h ahead) and Excluded Events.\n"
     "CREDITS: 99.0% to <99.95% → 10% of monthly fees; 95.0% to <99.0% → 25%; below 95.0% → "
     "50%. Credits must be requested within 30 days and are capped at 50% of that month's "
     "fees.\n"
     "CHRONIC FAILURE: three consecutive months below 99.0% entitle Customer to terminate "
     "the affected Order Form without penalty.\n"
     "\n"
     "We had 41 minutes of downtime in March, 6 h 10 min in April (including a 3 h "
     "maintenance window announced 48 h ahead) and 2 h in May. Work out the uptime for each "
     "month, the credits we're owed and whether we can walk away. Show the math."),
    ("From RFC 9111, section 4.2.1. Explain with worked examples how a shared cache "
     "computes freshness when both s-maxage and Expires are present, and what happens if "
     "the Date header is missing:\n"
     "\n"
     "\"A cache can calculate the freshness lifetime (denoted as freshness_lifetime) of a "
     "response by evaluating the following rules and using the first match:\n"
     "- If the cache is shared and the s-maxage response directive is present, use its "
     "value, or\n"
     "- If the max-age response directive is present, use its value, or\n"
     "- If the Expires response header field is present, use its value minus the value of "
     "the Date response header field (using the time the message was received if it is not "
     "present), or\n"
     "- Otherwise, no explicit expiration time is present in the response. A heuristic "
     "freshness lifetime might be applicable.\""),
    ("Root cause please, not just the symptom. Happens only in prod, roughly 1 in 200 "
     "invoice requests, and mostly on the last day of the month:\n"
     "\n"
     "Traceback (most recent call last):\n"
     "  File \"/srv/app/api/views.py\", line 88, in create_invoice\n"
     "    invoice = builder.build(customer_id, lines)\n"
     "  File \"/srv/app/billing/builder.py\", line 142, in build\n"
     "    rate = self._fx.rate(currency, at=issued_at)\n"
     "  File \"/srv/app/billing/fx.py\", line 57, in rate\n"
     "    return self._cache[(currency, at.date())]\n"
     "KeyError: ('CHF', datetime.date(2024, 3, 31))\n"
     "\n"
     "Context: a cron loads the day's rates at 00:05 Europe/Zurich and stores them under "
     "date.today() on a server whose TZ is Europe/Zurich. issued_at is a timezone-aware "
     "datetime in UTC coming from the API payload."),
    ("Our Spring Boot service started failing after we raised the pool size. Find the root "
     "cause:\n"
     "\n"
     "2024-05-14 09:12:03.481 ERROR 1 --- [nio-8080-exec-7] "
     "o.h.engine.jdbc.spi.SqlExceptionHelper : HikariPool-1 - Connection is not available, "
     "request timed out after 30000ms.\n"
     "org.springframework.dao.DataAccessResourceFailureException: Unable to acquire JDBC "
     "Connection\n"
     "\tat "
     "org.springframework.orm.jpa.vendor.HibernateJpaDialect.convertHibernateAccessException"
     "(HibernateJpaDialect.java:277)\n"
     "\t...\n"
     "Caused by: java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not "
     "available, request timed out after 30000ms.\n"
     "\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:696)\n"
     "\n"
     "Config: spring.datasource.hikari.maximum-pool-size=120, 8 replicas, Postgres "
     "max_connections=300, no pgbouncer. ReportService.export() is @Transactional and "
     "streams 2M rows to S3 inside the transaction."),
    ("panic: runtime error: invalid memory address or nil pointer dereference\n"
     "[signal SIGSEGV: segmentation violation code=0x1 addr=0x18 pc=0x6b2f4a]\n"
     "\n"
     "goroutine 4127 [running]:\n"
     "github.com/acme/ledger/internal/sync.(*Worker).flush(0xc0003a2000)\n"
     "\t/build/internal/sync/worker.go:211 +0x8a\n"
     "github.com/acme/ledger/internal/sync.(*Worker).Run.func2()\n"
     "\t/build/internal/sync/worker.go:164 +0x3c\n"
     "created by github.com/acme/ledger/internal/sync.(*Worker).Run in goroutine 1\n"
     "\t/build/internal/sync/worker.go:160 +0x1f5\n"
     "\n"
     "worker.go, lines 205-212:\n"
     "func (w *Worker) flush() {\n"
     "\tw.mu.Lock()\n"
     "\tbatch := w.pending\n"
     "\tw.pending = nil\n"
     "\tw.mu.Unlock()\n"
     "\tw.client.Send(batch)\n"
     "\tw.metrics.flushed.Add(float64(len(batch)))\n"
     "}\n"
     "\n"
     "Run() starts the flusher goroutine and then calls w.initMetrics(). What's going on, "
     "and how do I fix it without putting a lock on the hot path?"),
    ("Why does this only blow up under load? I need a real explanation, not \"add a "
     "try/catch\".\n"
     "\n"
     "UnhandledPromiseRejection: Error: write EPIPE\n"
     "    at afterWriteDispatched (node:internal/stream_base_commons:160:15)\n"
     "    at writeGeneric (node:internal/stream_base_commons:151:3)\n"
     "    at Socket._writeGeneric (node:net:952:11)\n"
     "    at RedisSocket.write "
     "(/app/node_modules/@redis/client/dist/lib/client/socket.js:141:21)\n"
     "    at Commander.sendCommand (/app/src/cache/commander.ts:48:19)\n"
     "(node:1) MaxListenersExceededWarning: Possible EventEmitter memory leak detected. 11 "
     "error listeners added to [RedisSocket].\n"
     "\n"
     "commander.ts calls createClient() inside getCache(), which every request handler "
     "calls, and attaches client.on('error', log) there too."),
    ("Review this like a senior engineer would: correctness first, then performance, then "
     "style. It's called about 3k times a second by the booking service.\n"
     "\n"
     "def merge_intervals(intervals):\n"
     "    intervals.sort()\n"
     "    out = []\n"
     "    for start, end in intervals:\n"
     "        if out and start <= out[-1][1]:\n"
     "            out[-1][1] = max(out[-1][1], end)\n"
     "        else:\n"
     "            out.append([start, end])\n"
     "    return out\n"
     "\n"
     "def free_slots(busy, day_start, day_end, min_len=15):\n"
     "    merged = merge_intervals(busy)\n"
     "    slots, cur = [], day_start\n"
     "    for s, e in merged:\n"
     "        if s - cur > min_len:\n"
     "            slots.append((cur, s))\n"
     "        cur = e\n"
     "    if day_end - cur > min_len:\n"
     "        slots.append((cur, day_end))\n"
     "    return slots"),
    ("code review please: is this retry helper safe to use around payment calls?\n"
     "\n"
     "func Retry(ctx context.Context, attempts int, fn func() error) error {\n"
     "\tvar err error\n"
     "\tfor i := 0; i < attempts; i++ {\n"
     "\t\tif err = fn(); err == nil {\n"
     "\t\t\treturn nil\n"
     "\t\t}\n"
     "\t\ttime.Sleep(time.Duration(1<<i) * 100 * time.Millisecond)\n"
     "\t}\n"
     "\treturn err\n"
     "}\n"
     "\n"
     "called as: Retry(ctx, 8, func() error { return psp.Charge(orderID, amountCents) })"),
    ("This migration locked our orders table for 11 minutes in staging. Explain exactly "
     "which statement takes which lock in Postgres 15, and rewrite it so it can run online "
     "on a 400M-row table.\n"
     "\n"
     "BEGIN;\n"
     "ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu';\n"
     "UPDATE orders SET region = c.region FROM customers c WHERE c.id = "
     "orders.customer_id;\n"
     "CREATE INDEX orders_region_idx ON orders(region);\n"
     "ALTER TABLE orders ADD CONSTRAINT orders_region_chk CHECK (region IN ('eu', 'us', "
     "'apac'));\n"
     "COMMIT;"),
    ("what's wrong with this hook? sometimes the list shows results for the previous query. "
     "explain the race and give me a fixed version\n"
     "\n"
     "function useSearch(q) {\n"
     "  const [res, setRes] = useState([]);\n"
     "  useEffect(() => {\n"
     "    if (!q) return;\n"
     "    fetch(`/api/search?q=${q}`)\n"
     "      .then(r => r.json())\n"
     "      .then(setRes);\n"
     "  }, [q]);\n"
     "  return res;\n"
     "}"),
    ("Marketing wants to reuse support-chat transcripts to train a sales model. Based on "
     "the text below, is that lawful without fresh consent? Walk through the compatibility "
     "test factor by factor and say what a DPIA would need to cover.\n"
     "\n"
     "GDPR Article 6(4): Where the processing for a purpose other than that for which the "
     "personal data have been collected is not based on the data subject's consent or on a "
     "Union or Member State law, the controller shall, in order to ascertain whether "
     "processing for another purpose is compatible with the purpose for which the personal "
     "data are initially collected, take into account, inter alia: (a) any link between the "
     "purposes for which the personal data have been collected and the purposes of the "
     "intended further processing; (b) the context in which the personal data have been "
     "collected, in particular regarding the relationship between data subjects and the "
     "controller; (c) the nature of the personal data; (d) the possible consequences of the "
     "intended further processing for data subjects; (e) the existence of appropriate "
     "safeguards, which may include encryption or pseudonymisation."),
    ("45 CFR 164.514(b)(2), the Safe Harbor method, requires removal of 18 identifiers of "
     "the individual or of relatives, employers or household members of the individual, "
     "including: names; all geographic subdivisions smaller than a state, except for the "
     "initial three digits of a ZIP code if the geographic unit formed by combining all ZIP "
     "codes with the same three initial digits contains more than 20,000 people; all "
     "elements of dates (except year) directly related to an individual, including "
     "admission and discharge dates; medical record numbers; and any other unique "
     "identifying number, characteristic, or code. The covered entity must also not have "
     "actual knowledge that the remaining information could be used to identify the "
     "individual.\n"
     "\n"
     "Our research export keeps: year of birth, 3-digit ZIP, admission month, hospital "
     "department, a salted hash of the MRN, and free-text discharge notes. Go field by "
     "field and tell me whether this dataset counts as de-identified, and what we'd have to "
     "change."),
    ("Summarise our obligations under this and draft the decision tree an onboarding "
     "analyst would follow, with the edge cases:\n"
     "\n"
     "Regulation 33 (enhanced due diligence). A relevant person must apply enhanced "
     "customer due diligence measures and enhanced ongoing monitoring, in addition to the "
     "usual measures, to manage and mitigate the risks arising (a) in any case identified "
     "as one where there is a high risk of money laundering or terrorist financing; (b) in "
     "any business relationship with a person established in a high-risk third country or "
     "in relation to any relevant transaction where either of the parties is established in "
     "a high-risk third country; (d) if the relevant person has determined that a customer "
     "or potential customer is a politically exposed person, or a family member or known "
     "close associate of one; (f) in any case where a transaction is complex or unusually "
     "large, or there is an unusual pattern of transactions, and the transaction or "
     "transactions have no apparent economic or legal purpose."),
    ("Design doc excerpt below. Poke holes in it: what breaks first at 10x traffic, where "
     "can we lose or double-count money, and what would you change?\n"
     "\n"
     "## Checkout v2\n"
     "The cart service publishes CartCheckedOut to SNS. Three SQS queues subscribe: "
     "payments, inventory, email.\n"
     "Payments charges the card via the PSP and writes a row to payments_db; on success it "
     "publishes PaymentCaptured.\n"
     "Inventory decrements stock in DynamoDB with a conditional write and publishes "
     "StockReserved.\n"
     "An order-orchestrator Lambda listens for both events and marks the order CONFIRMED "
     "when both have arrived (state is kept in a DynamoDB item with a 24h TTL).\n"
     "If the reservation fails, inventory publishes StockFailed and the orchestrator "
     "refunds through the payments API.\n"
     "SQS visibility timeout is 30s; Lambda timeout is 60s; messages go to a DLQ after 5 "
     "receives."),
    ("Architecture review for our field-service app's offline mode. Technicians edit work "
     "orders with no signal for hours at a time. Is this design going to lose edits, and "
     "where exactly?\n"
     "\n"
     "- Each device keeps a SQLite copy of its assigned work orders.\n"
     "- Edits are stored as full-row snapshots stamped with the device's clock.\n"
     "- On reconnect the app POSTs all changed rows; the server keeps whichever row has the "
     "newest device timestamp.\n"
     "- Checklists inside a work order are a JSON array column; photos are uploaded "
     "separately and linked by file name.\n"
     "- Dispatchers edit the same work orders from the web console, which writes straight "
     "to the server database.\n"
     "- Device clocks are not synchronised; some tablets have their time set by hand."),
    ("From the humidity/pressure sensor datasheet below, write the init sequence for a "
     "bare-metal driver (no vendor library) and point out anything in the text that looks "
     "contradictory or easy to get wrong.\n"
     "\n"
     "5.3 Measurement modes: in forced mode a single measurement is performed according to "
     "the selected oversampling settings, after which the sensor returns to sleep mode. "
     "Normal mode cycles between an active measurement period and an inactive standby "
     "period t_standby (0.5 ms to 1000 ms, register 0xF5 bits 7:5).\n"
     "5.4.3 Register 0xF4 \"ctrl_meas\": bits 7:5 osrs_t, bits 4:2 osrs_p, bits 1:0 mode "
     "(00 sleep, 01 and 10 forced, 11 normal). Changes to 0xF2 \"ctrl_hum\" only become "
     "effective after a write to 0xF4.\n"
     "6.2 I2C interface: the 7-bit address is 0x76 if SDO is connected to GND and 0x77 if "
     "connected to VDDIO; SDO must not be left floating.\n"
     "Table 16: maximum measurement time with all oversampling set to x16 is 112.8 ms; "
     "typical 2.3 ms at x1."),
    ("Datasheet extract for a single-cell Li-ion charger IC. We want to charge a 2000 mAh "
     "cell from a USB port limited to 500 mA, with the board sitting at 45 °C inside an "
     "enclosure. Work out R_PROG, the expected time in each charge phase and whether "
     "thermal regulation kicks in. State your assumptions.\n"
     "\n"
     "- Charge current set by a resistor from PROG to GND: I_CHG = 1000 V / R_PROG.\n"
     "- Precharge: when V_BAT < 2.9 V the charger supplies 10% of I_CHG.\n"
     "- Constant-voltage regulation at 4.20 V ±0.5%; charge terminates when the current "
     "falls below I_CHG / 10.\n"
     "- Thermal regulation reduces the charge current when die temperature exceeds 120 °C.\n"
     "- θJA = 43 °C/W (DFN-8 on a 4-layer board).\n"
     "- NTC input suspends charging outside 0-45 °C."),
    ("Read this and tell me, step by step, whether our mobile login flow is vulnerable. Our "
     "flow: the app builds the code_verifier with Math.random().toString(36), uses "
     "code_challenge_method=plain, keeps the verifier in AsyncStorage, and the redirect URI "
     "is a custom scheme myapp://cb that any installed app can register.\n"
     "\n"
     "RFC 7636, 4.1: code_verifier = high-entropy cryptographic random STRING using the "
     "unreserved characters [A-Z] / [a-z] / [0-9] / \"-\" / \".\" / \"_\" / \"~\", with a "
     "minimum length of 43 characters and a maximum length of 128 characters.\n"
     "4.2: If the client is capable of using \"S256\", it MUST use \"S256\", as \"S256\" is "
     "Mandatory To Implement (MTI) on the server. Clients are permitted to use \"plain\" "
     "only if they cannot support \"S256\" for some technical reason."),
    ("Explain this part of RFC 5321 as if you were debugging a real outage with me: our "
     "outbound mail queue has been holding messages for 5 days since a partner's MX started "
     "answering 452. Is our retry policy (every 5 minutes, forever) compliant, and what "
     "should it be?\n"
     "\n"
     "4.5.4.1: The sender MUST delay retrying a particular destination after one attempt "
     "has failed. In general, the retry interval SHOULD be at least 30 minutes; however, "
     "more sophisticated and variable strategies will be beneficial when the SMTP client "
     "can determine the reason for non-delivery. Retries continue until the message is "
     "transmitted or the sender gives up; the give-up time generally needs to be at least "
     "4-5 days.\n"
     "4.2.3: 452 Requested action not taken: insufficient system storage."),
    ("MQTT 5, QoS 2. Our broker restarted between PUBREC and PUBREL and a sensor reading "
     "was delivered twice to the app. Using the text, work out which side broke the "
     "protocol (or whether the spec allows this) and what state must survive a restart.\n"
     "\n"
     "4.3.3: The receiver MUST respond with a PUBREC containing the Packet Identifier from "
     "the incoming PUBLISH packet, having accepted ownership of the Application Message. "
     "Until it has received the corresponding PUBREL packet, the receiver MUST acknowledge "
     "any subsequent PUBLISH packet with the same Packet Identifier by sending a PUBREC. It "
     "MUST NOT cause duplicate messages to be delivered to any onward recipients in this "
     "case. After it has sent a PUBCOMP, the receiver MUST treat any subsequent PUBLISH "
     "packet that contains that Packet Identifier as being a new Application Message.\n"
     "4.1: The Session State in the Server includes QoS 2 messages which have been received "
     "from the Client, but have not been completely acknowledged."),
    ("IP clause from my freelance contract with an agency. I reuse my own open-source "
     "libraries in every project. Does this clause hand them over? Explain every phrase "
     "that matters and where the clauses contradict each other.\n"
     "\n"
     "9.1 All Deliverables and all Intellectual Property Rights therein, whether created "
     "before or after the Commencement Date, to the extent incorporated into the "
     "Deliverables, shall vest in and are hereby assigned to the Client absolutely.\n"
     "9.2 The Consultant waives all moral rights in the Deliverables.\n"
     "9.3 To the extent any Background IP is incorporated, the Consultant grants the Client "
     "a perpetual, irrevocable, worldwide, royalty-free licence to use, modify and "
     "sublicense such Background IP for any purpose.\n"
     "9.4 The Consultant shall not use any third-party or open-source materials without the "
     "Client's prior written approval."),
    ("auto-renewal clause from a vendor contract. we missed the notice date by 3 days. is "
     "there any way out? reason it through carefully\n"
     "\n"
     "12.1 This Agreement shall automatically renew for successive twelve (12) month "
     "Renewal Terms unless either party gives written notice of non-renewal no less than "
     "sixty (60) days prior to the end of the then-current term.\n"
     "12.2 Fees for any Renewal Term shall increase by the greater of 7% or CPI.\n"
     "12.3 Notices must be sent by courier to the address in the Order Form and are deemed "
     "received two Business Days after dispatch; notices by email are effective only if "
     "acknowledged in writing by the recipient.\n"
     "17.4 Customer may cancel at any time upon payment of all Fees for the remainder of "
     "the then-current term."),
    ("Drag-along and tag-along provisions from our seed-round shareholders' agreement. If "
     "an acquirer offers $40M with 30% of it as an earn-out, and the preferred holders have "
     "a 1x non-participating preference on $6M invested for 20% of the company, what does "
     "each class get and can the founders be dragged? Work it through.\n"
     "\n"
     "7.1 If Holders of at least 60% of the Preferred Shares and the Board approve a Sale "
     "of the Company, each Stockholder shall vote in favour and sell its shares on the same "
     "terms, provided that consideration is allocated in accordance with the Liquidation "
     "Preference in Article IV and no Stockholder is required to give representations other "
     "than as to title and authority.\n"
     "7.2 Any Stockholder proposing to transfer more than 50% of the outstanding shares to "
     "a third party shall permit the other Stockholders to participate pro rata on the same "
     "terms."),
    ("Is this arbitration clause enforceable against consumers in the EU and in California? "
     "Compare the two and explain what a court would likely do with the class action "
     "waiver.\n"
     "\n"
     "19. DISPUTE RESOLUTION. Any dispute arising out of these Terms shall be resolved "
     "exclusively by binding individual arbitration administered by JAMS in San Francisco. "
     "YOU AND WE WAIVE ANY RIGHT TO A JURY TRIAL OR TO PARTICIPATE IN A CLASS ACTION. You "
     "may opt out within 30 days of first accepting these Terms by emailing legal@. This "
     "section survives termination and is governed by the Federal Arbitration Act."),
    ("Venue hire agreement for our 300-person conference. There's a storm warning for the "
     "date. Read clauses 8 and 11 together and tell me, if we cancel 10 days out vs the "
     "venue cancels on the day, who pays what. The deposit was 30% of €48,000.\n"
     "\n"
     "8. Cancellation by the Hirer: more than 90 days before the Event, the deposit is "
     "forfeited; 90 to 30 days, 50% of the Hire Fee is payable; fewer than 30 days, 100% of "
     "the Hire Fee is payable, less any amount the Venue recovers by re-letting.\n"
     "11. Events beyond control: neither party is liable for failure to perform caused by "
     "events beyond its reasonable control, including severe weather for which an official "
     "red warning is issued, provided that the affected party notifies the other promptly. "
     "In that case the Venue shall return sums paid less costs reasonably incurred."),
    ("asyncio app under uvicorn. p99 goes from 40 ms to 9 s for a few seconds roughly every "
     "10 minutes. Here's a py-spy dump from a stuck worker plus the relevant code. What's "
     "the root cause?\n"
     "\n"
     "Thread 0x7F3A (active): \"MainThread\"\n"
     "    recv_into (ssl.py:1307)\n"
     "    readinto (socket.py:706)\n"
     "    _read_status (http/client.py:279)\n"
     "    begin (http/client.py:318)\n"
     "    getresponse (http/client.py:1375)\n"
     "    _make_request (urllib3/connectionpool.py:537)\n"
     "    urlopen (urllib3/connectionpool.py:793)\n"
     "    send (requests/adapters.py:486)\n"
     "    fetch_keys (app/auth/oidc.py:52)\n"
     "    get_jwks (app/auth/oidc.py:31)\n"
     "    verify (app/auth/middleware.py:18)\n"
     "\n"
     "# oidc.py\n"
     "@lru_cache(maxsize=1)\n"
     "def get_jwks(ttl_hash: int):\n"
     "    return fetch_keys()\n"
     "\n"
     "async def current_keys():\n"
     "    return get_jwks(int(time.time() // 600))"),
    ("Our JVM service keeps getting OOMKilled in its container even though the GC logs "
     "never show the heap above 1.2 GB. The limit is 2Gi. Find the root cause from this:\n"
     "\n"
     "[gc] Using G1\n"
     "[gc,init] Heap Max Capacity: 1536M\n"
     "kernel: Memory cgroup out of memory: Killed process 2231 (java) total-vm:7482112kB, "
     "anon-rss:2089164kB\n"
     "JVM flags: -Xmx1536m -XX:+UseG1GC -Xss1m\n"
     "Threads: ~900 (Netty event loops + an unbounded cached thread pool for blocking S3 "
     "uploads)\n"
     "Direct buffers: Netty PooledByteBufAllocator, -Dio.netty.maxDirectMemory not set\n"
     "Native Memory Tracking (last summary before the kill): Java Heap reserved=1572864KB "
     "committed=1572864KB; Thread reserved=948123KB committed=93211KB; Internal "
     "committed=402118KB; Other committed=288771KB"),
    ("==31337==ERROR: AddressSanitizer: heap-use-after-free on address 0x60b000000f58 at pc "
     "0x55d1c3 bp 0x7ffd5e8 sp 0x7ffd5e0\n"
     "READ of size 8 at 0x60b000000f58 thread T3\n"
     "    #0 0x55d1c2 in Session::on_timeout() src/net/session.cpp:214\n"
     "    #1 0x55a9e0 in TimerWheel::tick() src/net/timer_wheel.cpp:88\n"
     "    #2 0x5531f1 in EventLoop::run() src/net/event_loop.cpp:61\n"
     "freed by thread T1 here:\n"
     "    #0 0x7f2c in operator delete(void*)\n"
     "    #1 0x55c7aa in SessionTable::erase(unsigned long) src/net/session_table.cpp:40\n"
     "    #2 0x55d88e in Session::close() src/net/session.cpp:301\n"
     "previously allocated by thread T1 here:\n"
     "    #0 0x7f2b in operator new(unsigned long)\n"
     "    #1 0x55c512 in SessionTable::create(int) src/net/session_table.cpp:22\n"
     "\n"
     "Sessions register a raw `this` pointer with the timer wheel when they are created; "
     "close() is called from the acceptor thread when the peer sends FIN.\n"
     "\n"
     "Explain the lifetime bug and propose two fixes, with the trade-offs of each."),
    ("can someone explain why the borrow checker rejects this and what the idiomatic fix "
     "is? I've tried clone() everywhere and it still complains\n"
     "\n"
     "error[E0502]: cannot borrow `self.entries` as mutable because it is also borrowed as "
     "immutable\n"
     "  --> src/cache.rs:41:13\n"
     "   |\n"
     "36 |     fn get(&mut self, key: &str) -> Option<&V> {\n"
     "   |            - let's call the lifetime of this reference `'1`\n"
     "37 |         if let Some(e) = self.entries.get(key) {\n"
     "   |                          ------------ immutable borrow occurs here\n"
     "...\n"
     "40 |                 self.entries.remove(key);\n"
     "   |                 ^^^^^^^^^^^^^^^^^^^^^^^^ mutable borrow occurs here\n"
     "...\n"
     "43 |             return Some(&e.value);\n"
     "   |                    -------------- returning this value requires that "
     "`self.entries` is borrowed for `'1`\n"
     "\n"
     "fn get(&mut self, key: &str) -> Option<&V> {\n"
     "    if let Some(e) = self.entries.get(key) {\n"
     "        if e.expires_at < Instant::now() {\n"
     "            self.entries.remove(key);\n"
     "            return None;\n"
     "        }\n"
     "        return Some(&e.value);\n"
     "    }\n"
     "    None\n"
     "}"),
    ("Review this Terraform plan before I apply it to prod. What will actually happen, "
     "what's dangerous, and what order should the changes go in?\n"
     "\n"
     "  # aws_db_instance.main must be replaced\n"
     "-/+ resource \"aws_db_instance\" \"main\" {\n"
     "      ~ engine_version      = \"13.11\" -> \"15.4\"\n"
     "      ~ identifier          = \"app-db\" -> \"app-db-v2\" # forces replacement\n"
     "        skip_final_snapshot = true\n"
     "      ~ storage_encrypted   = false -> true # forces replacement\n"
     "    }\n"
     "\n"
     "  # aws_security_group_rule.db_ingress will be destroyed\n"
     "  - resource \"aws_security_group_rule\" \"db_ingress\" {\n"
     "      - cidr_blocks = [\"10.0.0.0/16\"]\n"
     "    }\n"
     "\n"
     "Plan: 2 to add, 1 to change, 2 to destroy."),
    ("SOC 2 auditor flagged CC6.1 and CC8.1. Below is our current process write-up. Map "
     "each sentence to the criteria, say where the evidence gap is, and propose concrete "
     "controls we can show for Q3.\n"
     "\n"
     "Engineers request production access in Slack and a team lead approves with a "
     "thumbs-up reaction. Access is granted through a shared IAM role; sessions last 12 "
     "hours. Changes go through GitHub pull requests with one approval, but admins can push "
     "directly to main during incidents. Deploys run automatically on merge. Access reviews "
     "happen \"when someone leaves\". The auditor wants population evidence for all of the "
     "above."),
    ("We're a payments fintech in scope of DORA. From the excerpt below, list what our "
     "contract with our cloud provider must contain, compare it with what a hyperscaler's "
     "standard terms usually give, and list the gaps.\n"
     "\n"
     "Article 30(2): The contractual arrangements on the use of ICT services shall include "
     "at least the following elements: (a) a clear and complete description of all "
     "functions and ICT services to be provided by the ICT third-party service provider, "
     "indicating whether subcontracting of an ICT service supporting a critical or "
     "important function is permitted and, when that is the case, the conditions applying "
     "to such subcontracting; (b) the locations, namely the regions or countries, where the "
     "contracted or subcontracted functions and ICT services are to be provided and where "
     "data is to be processed, including the storage location, and the requirement for the "
     "ICT third-party service provider to notify the financial entity in advance if it "
     "envisages changing such locations; (c) provisions on availability, authenticity, "
     "integrity and confidentiality in relation to the protection of data; (e) service "
     "level descriptions, including updates and revisions thereof; (h) termination rights "
     "and related minimum notice periods for the termination of the contractual "
     "arrangements."),
    ("Fire code excerpt below. Our office floor is 1,150 m², open plan, max occupancy 190, "
     "with one enclosed stair and one external escape stair; the longest travel distance we "
     "measured is 41 m, and for the desks in the far corner both routes leave in roughly "
     "the same direction. Do we comply? Which assumption would change the answer?\n"
     "\n"
     "Table 3.2 (offices): maximum travel distance where escape is available in one "
     "direction only: 18 m; in more than one direction: 45 m.\n"
     "3.4.1 A storey with an occupancy of more than 60 persons shall have at least two "
     "exits.\n"
     "3.4.3 Where two or more exits are provided, they shall be located so that the angle "
     "between the routes from any point is at least 45°; otherwise the distance is treated "
     "as one-directional.\n"
     "3.6 The minimum total exit width for 151-220 persons is 1,100 mm, with no single exit "
     "narrower than 850 mm."),
    ("Here's the IEC 62304 safety classification text and a description of our insulin "
     "bolus calculator app. Determine the software safety class, justify it, and list what "
     "that class implies for our documentation and testing.\n"
     "\n"
     "4.3 a) The MANUFACTURER shall assign to each SOFTWARE SYSTEM a software safety class "
     "(A, B, or C) according to the possible effects on the patient, operator, or other "
     "people resulting from a HAZARDOUS SITUATION to which the SOFTWARE SYSTEM can "
     "contribute. Class A: no injury or damage to health is possible. Class B: non-serious "
     "injury is possible. Class C: death or serious injury is possible. Risk control "
     "measures external to the software system may be taken into account.\n"
     "\n"
     "App: suggests a bolus dose from the carbs the user enters and the latest CGM reading; "
     "the user must confirm before the pump delivers; the pump firmware caps any single "
     "bolus at 10 units."),
    ("Explain how this transfer pricing guidance applies to our setup: the Irish entity "
     "legally owns the IP, the German entity does all the R&D under a cost-plus-5% "
     "contract, and the US entity sells. Where is the risk of a challenge, and from which "
     "tax authority?\n"
     "\n"
     "OECD Guidelines 6.71: The legal owner will be entitled to all the returns derived "
     "from the exploitation of the intangible only if it performs and controls all of the "
     "functions (development, enhancement, maintenance, protection and exploitation) "
     "related to the intangible. 6.64: A party that provides funding but does not control "
     "the financial risk associated with the funding is entitled to no more than a "
     "risk-free return. 6.76: If the legal owner outsources most or all of the important "
     "functions, it would not be entitled to retain the returns attributable to those "
     "functions."),
    ("Here's RFC 4180's grammar and our CSV row splitter. Find every kind of input where "
     "they disagree and give me a test case for each.\n"
     "\n"
     "file = [header CRLF] record *(CRLF record) [CRLF]\n"
     "record = field *(COMMA field)\n"
     "field = (escaped / non-escaped)\n"
     "escaped = DQUOTE *(TEXTDATA / COMMA / CR / LF / 2DQUOTE) DQUOTE\n"
     "non-escaped = *TEXTDATA\n"
     "\n"
     "def split_row(line):\n"
     "    out, cur, q = [], '', False\n"
     "    for ch in line:\n"
     "        if ch == '\"':\n"
     "            q = not q\n"
     "        elif ch == ',' and not q:\n"
     "            out.append(cur)\n"
     "            cur = ''\n"
     "        else:\n"
     "            cur += ch\n"
     "    out.append(cur)\n"
     "    return out"),
    ("Using the RFC 6455 excerpt, explain why our load balancer logs close code 1006 for "
     "about 3% of sessions and whether the client or the server is misbehaving. LB idle "
     "timeout is 60 s, the server pings every 90 s, browsers never ping.\n"
     "\n"
     "7.1.5: If _The WebSocket Connection is Closed_ and no Close control frame was "
     "received by the endpoint (such as could occur if the underlying transport connection "
     "is lost), _The WebSocket Connection Close Code_ is considered to be 1006.\n"
     "5.5.2: A Ping frame MAY be sent at any time after the connection is established and "
     "before the connection is closed.\n"
     "5.5.3: A Pong frame sent in response to a Ping frame must have identical "
     "\"Application data\" as found in the message body of the Ping frame being replied to."),
    ("We use this Redis lock so a cron runs exactly once across 6 nodes. Read the code and "
     "the incident note and tell me whether two nodes can hold the lock at once; if so, "
     "give a concrete timeline.\n"
     "\n"
     "def run_exclusive(job):\n"
     "    token = uuid4().hex\n"
     "    if not r.set('lock:' + job.name, token, nx=True, px=30000):\n"
     "        return\n"
     "    try:\n"
     "        job.run()  # usually 5-20 s, sometimes 2 min at month end\n"
     "    finally:\n"
     "        if r.get('lock:' + job.name) == token:\n"
     "            r.delete('lock:' + job.name)\n"
     "\n"
     "Incident: on 31 Jan the invoicing batch ran twice and customers got duplicate "
     "invoices. Redis is one primary with one replica and automatic failover; the client is "
     "created without decode_responses."),
    ("Post-incident review: one of our two upstream providers had an outage inside their "
     "transport network; our interface stayed up, and traffic to their prefixes blackholed "
     "for about 3 minutes. Here's the router config and log. Reconstruct what happened and "
     "propose config changes.\n"
     "\n"
     "router bgp 64512\n"
     " neighbor 203.0.113.1 remote-as 174\n"
     " neighbor 203.0.113.1 timers 60 180\n"
     " neighbor 198.51.100.1 remote-as 3356\n"
     " neighbor 198.51.100.1 timers 60 180\n"
     "!\n"
     "09:14:02 NOC: provider reports loss in their metro ring\n"
     "09:17:02 %BGP-5-ADJCHANGE: neighbor 203.0.113.1 Down BGP Notification sent (hold time "
     "expired)\n"
     "09:21:10 %BGP-5-ADJCHANGE: neighbor 203.0.113.1 Up\n"
     "\n"
     "No BFD configured on either session."),
    ("IFRS 15 question with a real contract. We sell a 3-year SaaS licence for €90k upfront "
     "plus a one-off €15k implementation, and throw in premium support for year one "
     "(normally €6k). Stand-alone prices: licence €32k/year, implementation €20k, support "
     "€6k/year. Using the extract, identify the performance obligations, allocate the "
     "transaction price and give me revenue per year.\n"
     "\n"
     "IFRS 15.22: At contract inception, an entity shall assess the goods or services "
     "promised in a contract with a customer and shall identify as a performance obligation "
     "each promise to transfer to the customer either (a) a good or service (or a bundle of "
     "goods or services) that is distinct; or (b) a series of distinct goods or services "
     "that are substantially the same and that have the same pattern of transfer to the "
     "customer.\n"
     "15.74: The entity shall allocate the transaction price to each performance obligation "
     "identified in the contract on a relative stand-alone selling price basis."),
    ("Is this safe? It's in our firmware's battery gauge, on a 16-bit MCU where int is 16 "
     "bits. Look for overflow, integer promotion and rounding problems and give me a "
     "corrected version.\n"
     "\n"
     "uint16_t soc_percent(uint16_t mv, uint16_t mv_empty, uint16_t mv_full) {\n"
     "    if (mv <= mv_empty) return 0;\n"
     "    if (mv >= mv_full) return 100;\n"
     "    return (mv - mv_empty) * 100 / (mv_full - mv_empty);\n"
     "}\n"
     "\n"
     "Typical values: mv_empty = 3300, mv_full = 4200."),
    ("Review for thread safety. This singleton holds our feature flags and is hit by ~200 "
     "request threads.\n"
     "\n"
     "public class FlagStore {\n"
     "    private static FlagStore instance;\n"
     "    private Map<String, Boolean> flags = new HashMap<>();\n"
     "    private long loadedAt;\n"
     "\n"
     "    public static FlagStore get() {\n"
     "        if (instance == null) {\n"
     "            synchronized (FlagStore.class) {\n"
     "                if (instance == null) instance = new FlagStore();\n"
     "            }\n"
     "        }\n"
     "        return instance;\n"
     "    }\n"
     "\n"
     "    public boolean enabled(String name) {\n"
     "        if (System.currentTimeMillis() - loadedAt > 60_000) {\n"
     "            flags = loadFromConfigService();\n"
     "            loadedAt = System.currentTimeMillis();\n"
     "        }\n"
     "        return flags.getOrDefault(name, false);\n"
     "    }\n"
     "}"),
    ("From this USB Power Delivery excerpt, walk me through, in order, what happens when "
     "our 65 W charger is plugged into a laptop that asks for 20 V at 3.25 A, and why some "
     "phones end up at 5 V. Point out any place where our firmware could violate the "
     "timing.\n"
     "\n"
     "The Source shall send Source_Capabilities every tTypeCSendSourceCap (100-200 ms) "
     "until a GoodCRC is received, up to nCapsCount (50) times. On receiving a Request, the "
     "Source shall respond with Accept or Reject within tSenderResponse (24-30 ms). After "
     "Accept, the Source transitions the supply and sends PS_RDY within tPSTransition (≤ "
     "550 ms).\n"
     "Our fixed PDOs: 5V/3A, 9V/3A, 15V/3A, 20V/3.25A. Our firmware evaluates the Request "
     "in the main loop, which runs every 40 ms."),
    ("Drug label excerpt. Patient: 82 y, 58 kg, creatinine clearance 38 mL/min, serum "
     "creatinine 1.3 mg/dL, also on clarithromycin. Go through the dosing, the interaction "
     "and the monitoring the label implies. It's for a pharmacist training quiz, so show "
     "your reasoning.\n"
     "\n"
     "DOSAGE: The recommended dose is 5 mg twice daily. Reduce to 2.5 mg twice daily in "
     "patients with at least two of the following: age ≥ 80 years, body weight ≤ 60 kg, or "
     "serum creatinine ≥ 1.5 mg/dL.\n"
     "INTERACTIONS: Combined strong inhibitors of CYP3A4 and P-gp increase exposure; reduce "
     "the dose by 50% when co-administered, or avoid if the patient already takes 2.5 mg "
     "twice daily. Clarithromycin, although a combined P-gp and strong CYP3A4 inhibitor, "
     "produces a smaller increase in exposure; no dose adjustment is necessary."),
    ("Section 4 of a public tender is below. Build a compliance matrix (requirement, our "
     "answer, evidence, risk) for a 12-person software consultancy that holds ISO 27001 but "
     "not ISO 9001, and tell me whether we should even bid.\n"
     "\n"
     "4.1 Bidders must demonstrate annual turnover of at least €2.5M in each of the last "
     "three financial years.\n"
     "4.2 At least three references for contracts of similar scope (≥ €500k) delivered to "
     "public bodies within the last five years.\n"
     "4.3 Certification to ISO 9001 and ISO/IEC 27001, or equivalent evidence of quality "
     "and information security management.\n"
     "4.4 Consortia are permitted; the lead member must meet 4.1 alone.\n"
     "4.5 Key personnel: one project manager with PRINCE2 Practitioner and two senior "
     "developers with 8+ years' experience."),
    ("Numbers don't match between the revenue dashboard and finance's export: the dashboard "
     "shows about 2% more. Using the pipeline description, list every place the gap could "
     "come from, ranked by likelihood, and how to verify each one.\n"
     "\n"
     "1. The app writes purchase events to a Postgres outbox; a Debezium connector ships "
     "them to S3 as JSON (at-least-once).\n"
     "2. A Spark job runs hourly, picks up new S3 files by modification time, converts "
     "currency at the daily ECB rate and appends to a Delta table.\n"
     "3. dbt builds fct_revenue daily at 02:00 UTC, deduplicating on (order_id, "
     "event_type).\n"
     "4. Finance exports from the billing provider, which books refunds as negative "
     "invoices dated on the refund date and uses the rate on the invoice date.\n"
     "5. The dashboard reads fct_revenue in the viewer's local timezone."),
    ("Evaluate this rate limiter for our public API gateway (12 gateway pods behind an L4 "
     "load balancer). Is the limit enforced correctly? Estimate the worst-case overshoot "
     "and propose a better scheme.\n"
     "\n"
     "Each pod keeps an in-memory token bucket per API key with capacity = limit / 12 and "
     "refill = limit per minute / 12 / 60 per second. Pods autoscale between 6 and 30 on "
     "CPU. Keys with a limit under 60/min get their capacity rounded up to 1 token per pod. "
     "Large customers hold 50-200 keep-alive connections; small ones usually 1-2."),
    ("Read this model evaluation summary and tell me whether it's fair to claim the new "
     "fraud model is better. Check the stats and the setup carefully.\n"
     "\n"
     "Old model: precision 0.81, recall 0.62 on the Jan-Mar holdout (412k transactions, "
     "1,930 frauds).\n"
     "New model: precision 0.78, recall 0.71 on the April holdout (138k transactions, 611 "
     "frauds).\n"
     "The new model's threshold was tuned on the April holdout; the old model's threshold "
     "has been fixed since last year.\n"
     "Chargeback labels mature after 90 days; April labels were pulled on 10 June.\n"
     "The feature merchant_risk_score was added to the new model; it is computed from "
     "chargebacks up to the scoring date."),
    ("Break clause: was our break notice valid? We served it by email on 2 Feb for a break "
     "date of 24 June, paid the June quarter's rent in full, and left two desks and a "
     "fridge in the unit.\n"
     "\n"
     "6.1 The Tenant may terminate this Lease on 24 June 2025 (the Break Date) by giving "
     "the Landlord not less than six months' written notice.\n"
     "6.2 Any notice under clause 6.1 shall be void unless on the Break Date (a) the Tenant "
     "has paid all Rent due under this Lease, and (b) the Tenant gives up vacant possession "
     "of the Property.\n"
     "6.3 Section 196 of the Law of Property Act 1925 applies to notices given under this "
     "Lease."),
    ("Which of these two indemnities is wider, and what would each one cover if a "
     "subcontractor of the supplier leaked our customer data and a customer sued us? Go "
     "phrase by phrase.\n"
     "\n"
     "(A) \"Supplier shall indemnify Customer against all losses arising from any breach of "
     "this Agreement by Supplier.\"\n"
     "(B) \"Supplier shall indemnify, defend and hold harmless Customer and its Affiliates "
     "from and against any and all Losses incurred in connection with any third-party claim "
     "alleging that the Services infringe any Intellectual Property Right.\""),
    ("System.InvalidOperationException: A second operation was started on this context "
     "instance before a previous operation completed. This is usually caused by different "
     "threads concurrently using the same instance of DbContext.\n"
     "   at "
     "Microsoft.EntityFrameworkCore.Infrastructure.Internal.ConcurrencyDetector.EnterCritica"
     "lSection()\n"
     "   at "
     "Microsoft.EntityFrameworkCore.Query.Internal.SingleQueryingEnumerable`1.AsyncEnumerato"
     "r.MoveNextAsync()\n"
     "   at "
     "Acme.Rewards.Services.BalanceService.<>c__DisplayClass4_0.<<RecalculateAsync>b__0>d.Mo"
     "veNext() in /src/Rewards/Services/BalanceService.cs:line 63\n"
     "\n"
     "var tasks = members.Select(async m => {\n"
     "    var tx = await _db.Transactions.Where(t => t.MemberId == m.Id).ToListAsync();\n"
     "    m.Balance = tx.Sum(t => t.Delta);\n"
     "});\n"
     "await Task.WhenAll(tasks);\n"
     "\n"
     "_db is injected as scoped. Explain exactly why this fails, why it only fails some of "
     "the time, and give me a version that is both correct and fast for 50k members."),
    ("WCAG 2.2 criteria below, plus a description of our checkout form. Audit it: list "
     "every failure with the criterion number and a fix.\n"
     "\n"
     "1.4.3 Contrast (Minimum): the visual presentation of text has a contrast ratio of at "
     "least 4.5:1 (3:1 for large text).\n"
     "2.4.7 Focus Visible: any keyboard operable user interface has a mode of operation "
     "where the keyboard focus indicator is visible.\n"
     "3.3.1 Error Identification: if an input error is automatically detected, the item "
     "that is in error is identified and the error is described to the user in text.\n"
     "2.5.8 Target Size (Minimum): the size of the target for pointer inputs is at least 24 "
     "by 24 CSS pixels, with exceptions.\n"
     "\n"
     "Form: light grey placeholder text (#9e9e9e on white) used instead of labels; outline: "
     "none on every input; invalid fields turn red with no message; the \"apply coupon\" "
     "link is a 14×14 px icon; the submit button stays disabled until all fields are valid."),
    ("Patent claim below. Our product is a smart thermostat that learns schedules on the "
     "device and only uploads weekly aggregates. Does it read on claim 1? Break the claim "
     "into elements and map each one to our product.\n"
     "\n"
     "1. A method for controlling a climate system, comprising: receiving, at a server, "
     "temperature setpoint adjustments made by a user at a thermostat; generating, at the "
     "server, an occupancy schedule based on said adjustments using a machine-learned "
     "model; transmitting the schedule to the thermostat; and automatically adjusting the "
     "setpoint according to the schedule when a presence sensor indicates that the dwelling "
     "is unoccupied."),
    ("We shipped 400 cartons of ceramics and 38 arrived broken. The carrier points to the "
     "bill of lading terms below. What can we recover, how is the limit computed (total "
     "gross weight 9,600 kg, no value declared), and what's the deadline to sue?\n"
     "\n"
     "Art. IV(5)(a): Unless the nature and value of such goods have been declared by the "
     "shipper before shipment and inserted in the bill of lading, neither the carrier nor "
     "the ship shall in any event be or become liable for any loss or damage to or in "
     "connection with the goods in an amount exceeding 666.67 units of account per package "
     "or unit or 2 units of account per kilogramme of gross weight of the goods lost or "
     "damaged, whichever is the higher.\n"
     "Art. III(6): The carrier and the ship shall in any event be discharged from all "
     "liability whatsoever in respect of the goods, unless suit is brought within one year "
     "of their delivery."),
    ("Stepper driver datasheet bits. I need 1.2 A RMS per phase at 24 V with 1/16 "
     "microstepping, in a sealed box with no airflow. Pick the sense resistor, estimate the "
     "chip's power dissipation and tell me whether it will overheat. Reasoning please, not "
     "just numbers.\n"
     "\n"
     "I_FS (peak) = V_REF / (8 × R_SENSE); V_REF max 2.5 V.\n"
     "R_DS(on), high side + low side: 0.55 Ω typ at 25 °C, 0.85 Ω at 125 °C.\n"
     "Thermal shutdown at 165 °C.\n"
     "R_θJA = 31 °C/W on a 2-layer 1 oz board with thermal vias, 48 °C/W without.\n"
     "Quiescent current: 5 mA at 24 V."),
    ("We log a 32-byte record every 10 s to this EEPROM. Using the datasheet numbers, how "
     "long until we wear it out? Then design a wear-levelling scheme that gets us to 10 "
     "years, and show the math.\n"
     "\n"
     "Capacity 256 Kbit (32 KB), organised in 64-byte pages. Write cycle time t_WR = 5 ms "
     "max. Endurance: 1,000,000 write cycles per page at 25 °C, 400,000 at 85 °C. Data "
     "retention: 100 years. A write of fewer than 64 bytes still costs one cycle for the "
     "whole page. Ambient temperature in our product: 60-80 °C."),
    ("Security review of this GraphQL schema and the resolver notes. Find the authorization "
     "holes and the denial-of-service vectors, and rank them.\n"
     "\n"
     "type Query { me: User, invoice(id: ID!): Invoice, search(q: String!, first: Int = "
     "20): [Result] }\n"
     "type User { id: ID!, email: String, team: Team, invoices(first: Int): [Invoice] }\n"
     "type Team { members: [User], owner: User }\n"
     "type Invoice { id: ID!, amount: Int, pdfUrl: String, customer: User }\n"
     "\n"
     "Resolvers: Query.me checks the session. Query.invoice loads by id. User.invoices "
     "returns every invoice of that user. Team.members has no pagination. `first` is not "
     "capped anywhere. Introspection is enabled in production."),
    ("EU drone rules extract. We want to film a 20-minute promo over a business park with a "
     "1.2 kg drone that has no class marking (bought in 2024), about 40 m from an office "
     "building and crossing a road with light traffic. Which category and subcategory "
     "apply, what does the pilot need, and what would push us into the \"specific\" "
     "category?\n"
     "\n"
     "Open category A2: drones with a C2 class marking; fly at a safe distance from "
     "uninvolved people, not less than 30 m horizontally (5 m in low-speed mode); the "
     "remote pilot holds an A2 certificate of competency.\n"
     "A3: fly in an area where no uninvolved people are endangered, at least 150 m from "
     "residential, commercial, industrial or recreational areas.\n"
     "All open-category flights: max height 120 m, visual line of sight, no flights over "
     "assemblies of people.\n"
     "Drones without a class marking above 250 g placed on the market after 1 January 2024 "
     "may only fly in A3."),
    ("Two of our workers deadlock a few times an hour. Here's the Postgres log and the code "
     "path. Explain the lock ordering problem and fix it without serialising every "
     "transfer.\n"
     "\n"
     "ERROR:  deadlock detected\n"
     "DETAIL:  Process 48211 waits for ShareLock on transaction 9912877; blocked by process "
     "48230.\n"
     "        Process 48230 waits for ShareLock on transaction 9912874; blocked by process "
     "48211.\n"
     "        Process 48211: UPDATE wallets SET balance = balance + 500 WHERE user_id = 77\n"
     "        Process 48230: UPDATE wallets SET balance = balance + 120 WHERE user_id = 31\n"
     "\n"
     "transfer(a, b, amt), in one transaction:\n"
     "  UPDATE wallets SET balance = balance - amt WHERE user_id = a;\n"
     "  UPDATE wallets SET balance = balance + amt WHERE user_id = b;"),
    ("Please review this PHP login endpoint for security issues and rank them by severity, "
     "with a fixed version.\n"
     "\n"
     "<?php\n"
     "$u = $_POST['user']; $p = $_POST['pass'];\n"
     "$row = $db->query(\"SELECT id, pass_md5, is_admin FROM users WHERE name = "
     "'$u'\")->fetch();\n"
     "if ($row && md5($p) == $row['pass_md5']) {\n"
     "    session_start();\n"
     "    $_SESSION['uid'] = $row['id'];\n"
     "    $_SESSION['admin'] = $row['is_admin'];\n"
     "    header('Location: ' . $_GET['next']);\n"
     "} else {\n"
     "    echo \"Unknown user or wrong password for \" . $u;\n"
     "}"),
    ("Incident timeline below; we're a listed company. Decide whether this triggers an SEC "
     "Form 8-K Item 1.05 filing and by when, and argue both sides before concluding.\n"
     "\n"
     "Mon 08:40 on-call sees unusual egress from the analytics bucket.\n"
     "Mon 09:15 bucket policy found public since Friday 17:02 after a Terraform change.\n"
     "Mon 09:20 policy reverted.\n"
     "Mon 11:00 access logs show 3 downloads of export_2024_q1.csv.gz from a "
     "hosting-provider IP range on Saturday 03:12.\n"
     "Mon 14:30 the file holds 48,210 customer rows: email, bcrypt password hash, country, "
     "plan, last 4 digits of card.\n"
     "Wed 10:00 the disclosure committee meets for the first time.\n"
     "Fri 16:00 the committee concludes the incident is material.\n"
     "\n"
     "Item 1.05(a): If the registrant experiences a cybersecurity incident that is "
     "determined by the registrant to be material, describe the material aspects of the "
     "nature, scope, and timing of the incident, and the material impact or reasonably "
     "likely material impact on the registrant. Instruction 1: a registrant shall make a "
     "materiality determination regarding a cybersecurity incident without unreasonable "
     "delay after discovery of the incident. The Form 8-K is due within four business days "
     "after the registrant determines that the incident is material."),
    ("RRULE question. Using the RFC 5545 text, expand this rule by hand for Jan-Jun 2025 "
     "and tell me which of the dates and times our app generated are wrong, and why.\n"
     "\n"
     "DTSTART;TZID=Europe/Berlin:20250131T090000\n"
     "RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=6\n"
     "\n"
     "Our app generated: 2025-01-31, 2025-02-28, 2025-03-28, 2025-04-25, 2025-05-30, "
     "2025-06-27, all at 08:00 UTC.\n"
     "\n"
     "RFC 5545, 3.3.10: Each BYDAY value can also be preceded by a positive (+n) or "
     "negative (-n) integer. If present, this indicates the nth occurrence of a specific "
     "day within the MONTHLY or YEARLY \"RRULE\". For example, within a MONTHLY rule, +1MO "
     "(or simply 1MO) represents the first Monday within the month, whereas -1MO represents "
     "the last Monday of the month."),
    ("Influencer contract snippet. I'm the creator. Tell me what I'm signing away, "
     "especially around usage rights and exclusivity, and what you'd counter with. Plain "
     "English, but be thorough.\n"
     "\n"
     "4. Grant of Rights. Creator grants Brand an exclusive, worldwide, perpetual right to "
     "use, edit and repost the Content and Creator's name, likeness and voice in any media "
     "now known or later devised, including paid advertising.\n"
     "5. Exclusivity. During the Term and for 6 months thereafter, Creator shall not "
     "promote any product in the personal care category.\n"
     "6. Fee. $4,500 per post, payable net 60 upon Brand's approval of the Content; Brand "
     "may request up to 3 rounds of revisions.\n"
     "9. Morals. Brand may terminate and reclaim fees paid if Creator engages in conduct "
     "that, in Brand's sole opinion, brings Brand into disrepute."),
    ("Deadlock clause from our 50/50 joint venture. We and our partner disagree on the 2025 "
     "budget. Walk through exactly what happens, with dates, if we trigger the mechanism "
     "today (Monday 3 March), and say who is advantaged by the shotgun step.\n"
     "\n"
     "15.1 A Deadlock occurs if a Reserved Matter is not approved at two consecutive Board "
     "meetings held at least 10 Business Days apart.\n"
     "15.2 Either Shareholder may then refer the matter to the Chairs of the parent "
     "companies, who shall meet within 15 Business Days.\n"
     "15.3 If the matter is unresolved 20 Business Days after referral, either Shareholder "
     "may serve a Transfer Notice specifying a price per Share at which it is willing both "
     "to buy the other's Shares and to sell its own.\n"
     "15.4 The recipient shall within 30 days elect to buy or to sell at that price; "
     "failing an election it is deemed to have elected to sell."),
    ("someone force-pushed main and we lost 2 days of merges. here's the reflog from my "
     "laptop and the server hook log. figure out exactly which commits are gone and give me "
     "the safest recovery steps, in order\n"
     "\n"
     "$ git reflog show origin/main\n"
     "9c1e2aa refs/remotes/origin/main@{0}: fetch: forced-update\n"
     "4f7b310 refs/remotes/origin/main@{1}: fetch: fast-forward\n"
     "81d0c5e refs/remotes/origin/main@{2}: fetch: fast-forward\n"
     "2b9e441 refs/remotes/origin/main@{3}: pull: fast-forward\n"
     "\n"
     "pre-receive log: 2024-06-12T16:41:09Z user=mkovacs ref=refs/heads/main old=4f7b310 "
     "new=9c1e2aa forced=true\n"
     "\n"
     "$ git log --oneline -3 9c1e2aa\n"
     "9c1e2aa WIP rebase on old main\n"
     "2b9e441 Merge PR #812 payments retry\n"
     "77aa0c1 Merge PR #809 i18n"),
    ("Board pack table below (k€). Explain the variances, tell me which are timing and "
     "which are real, and draft three questions the board should ask the CFO.\n"
     "\n"
     "Line                 | Budget Q2 | Actual Q2 | Var\n"
     "Subscription revenue | 4,200     | 3,910     | -290\n"
     "Services revenue     | 600       | 910       | +310\n"
     "Cloud hosting        | 520       | 705       | -185\n"
     "Headcount costs      | 2,300     | 2,050     | +250\n"
     "Marketing            | 450       | 190       | +260\n"
     "EBITDA               | 1,530     | 1,875     | +345\n"
     "\n"
     "Notes: two enterprise deals slipped to July; a data migration project for a new "
     "client was delivered early; 9 open roles are unfilled; the brand campaign moved to "
     "Q3; a storage bucket with 1.4 PB of logs had no lifecycle policy."),
    ("SDS extract for a solvent the print room wants to use (no fume hood, 25 m² room, 2.5 "
     "m ceiling, 1 air change per hour). Is it OK? Walk through an exposure estimate for "
     "200 mL a day evaporating evenly over an 8-hour shift and compare it with the limits.\n"
     "\n"
     "Section 2: H225 Highly flammable liquid and vapour. H361d Suspected of damaging the "
     "unborn child. H373 May cause damage to organs through prolonged or repeated "
     "exposure.\n"
     "Section 8: Occupational exposure limit (8-h TWA): 50 ppm (about 190 mg/m³). STEL (15 "
     "min): 150 ppm.\n"
     "Section 9: Vapour pressure 2.9 kPa at 20 °C; density 0.87 g/cm³; molecular weight 92 "
     "g/mol."),
    ("I'm reviewing a design doc for a video transcoding platform. Please read it end to "
     "end and give me (1) the three riskiest assumptions, (2) a back-of-envelope cost and "
     "capacity check, (3) the failure modes nobody wrote down.\n"
     "\n"
     "---\n"
     "Title: Transcode v3\n"
     "Goals: ingest up to 40k uploads/day (evening peak at 4x the average) and produce HLS "
     "ladders (1080p/720p/480p/240p) within 10 min of upload for 95% of videos shorter than "
     "20 min.\n"
     "Flow: uploads land in object storage through pre-signed URLs. A storage notification "
     "triggers the Splitter, which cuts the source into 4-second GOP-aligned chunks and "
     "enqueues one task per chunk per rendition. Workers on spot GPU instances pull tasks, "
     "transcode with NVENC and write segments back to storage. The Stitcher waits until all "
     "segment markers exist, writes the master playlist and flips the video to READY.\n"
     "Capacity: one worker transcodes a 4 s chunk to all four renditions in ~1.1 s of GPU "
     "time; the average video is 6 min long. We plan 60 spot GPUs with a floor of 8 "
     "on-demand.\n"
     "Failure handling: tasks have a 5 min visibility timeout; a worker evicted from spot "
     "loses its in-flight tasks, which reappear after the timeout. The Stitcher polls every "
     "30 s for up to 2 h, then marks the video FAILED.\n"
     "Open questions: audio is transcoded by the Splitter in-line; thumbnails are generated "
     "by the Stitcher from the 720p segments; DRM is undecided."),
    ("Vendor's security schedule is below. We're a hospital group. Mark up every clause "
     "that's weaker than what we need and explain why, then give me the five must-win "
     "changes.\n"
     "\n"
     "SCHEDULE 4 - INFORMATION SECURITY\n"
     "1. Provider shall maintain an information security programme consistent with industry "
     "practice and shall review it at least every two years.\n"
     "2. Customer Data shall be encrypted in transit using TLS 1.2 or higher. Encryption at "
     "rest is provided for production databases; backups are stored in a separate region "
     "and encrypted where supported by the storage provider.\n"
     "3. Provider may use the subcontractors listed on its website and may update the list "
     "from time to time; continued use of the Service constitutes acceptance.\n"
     "4. Provider will notify Customer of a Security Incident affecting Customer Data "
     "within a commercially reasonable time after confirmation.\n"
     "5. Penetration tests are performed annually by a qualified party; summaries are "
     "available under NDA upon request, no more than once per year.\n"
     "6. Customer may not perform its own security testing.\n"
     "7. Upon termination, Customer Data will be deleted within 180 days; backups are "
     "overwritten in the ordinary course.\n"
     "8. Provider's liability for breach of this Schedule is subject to the limitations in "
     "the Agreement.\n"
     "9. Access by Provider personnel is limited to those with a business need; Provider "
     "performs background checks where permitted by local law."),
    ("Given the SemVer 2.0.0 precedence rules below, sort these versions and explain each "
     "tricky comparison: 1.0.0-alpha, 1.0.0-alpha.1, 1.0.0-alpha.beta, 1.0.0-beta, "
     "1.0.0-beta.2, 1.0.0-beta.11, 1.0.0-rc.1, 1.0.0, 1.0.0+build.5, 1.0.1-0, 1.0.0-1, "
     "1.0.0-Alpha.\n"
     "\n"
     "11.4: Precedence for two pre-release versions with the same major, minor, and patch "
     "version MUST be determined by comparing each dot separated identifier from left to "
     "right until a difference is found: identifiers consisting of only digits are compared "
     "numerically; identifiers with letters or hyphens are compared lexically in ASCII sort "
     "order; numeric identifiers always have lower precedence than non-numeric identifiers; "
     "a larger set of pre-release fields has a higher precedence than a smaller set, if all "
     "of the preceding identifiers are equal.\n"
     "10: Build metadata MUST be ignored when determining version precedence."),
    ("Bitte prüf diese Haftungsklausel aus unserem Werkvertrag nach deutschem AGB-Recht (§§ "
     "307, 309 Nr. 7 BGB) und erklär, welche Teile unwirksam sein dürften und warum:\n"
     "\n"
     "§ 11 Haftung\n"
     "(1) Der Auftragnehmer haftet nur für Vorsatz und grobe Fahrlässigkeit.\n"
     "(2) Die Haftung für mittelbare Schäden und entgangenen Gewinn ist ausgeschlossen.\n"
     "(3) Die Haftung ist in jedem Fall auf 10 % des Auftragswerts begrenzt.\n"
     "(4) Ansprüche verjähren innerhalb von sechs Monaten ab Abnahme."),
    ("Is this limitation clause enforceable against a consumer under English law? \"We "
     "shall not be liable for any loss or damage howsoever arising, including death or "
     "personal injury caused by our negligence.\" Explain why, citing the statute."),
    ("Find the bug: `for (size_t i = n - 1; i >= 0; --i) sum += a[i];` and explain exactly "
     "what happens at runtime on 64-bit Linux, and what the compiler is allowed to assume "
     "about this loop."),
    ("Our storage vendor's docs say: \"Reads are eventually consistent by default; a read "
     "issued after a successful write acknowledgment from the same client session reflects "
     "that write.\" Explain precisely what this guarantees and what it doesn't, and whether "
     "it is enough for a bank ledger read by several services."),
    ("Does this confidentiality term survive if the deal falls through? \"The obligations "
     "in this Section 5 shall continue for three years from the date of disclosure, except "
     "for trade secrets, which shall be protected for so long as they remain trade "
     "secrets.\" Explain how it interacts with a return-or-destroy clause and with backups "
     "we can't delete."),
    ("Below is an ADR our platform team wants to merge, and I'm the approver. Give me a "
     "careful critique: are the options compared fairly, is the decision justified by the "
     "numbers they give, and what should they measure before committing?\n"
     "\n"
     "ADR-041: Move tenant search from a shared index to per-tenant indices\n"
     "Status: proposed\n"
     "Context: We host search for ~3,800 tenants on one 24-node cluster with a shared "
     "index, routed by tenant_id. The largest 40 tenants hold 71% of the documents. Noisy "
     "neighbours push p99 query latency above 2 s several times a week, mostly during bulk "
     "re-imports by large tenants. Mapping changes require a full reindex (~19 h) and are "
     "held back by the slowest tenant's custom fields.\n"
     "Options:\n"
     "(1) Keep the shared index; add per-tenant rate limits on bulk imports and on query "
     "concurrency.\n"
     "(2) One index per tenant on the same cluster, each with 1 primary shard and 1 "
     "replica. Estimated overhead: ~7,600 shards, each with a fixed heap cost of roughly "
     "10-50 MB.\n"
     "(3) Tiered: dedicated indices for the top 40 tenants, the shared index for the long "
     "tail, with a routing table in the API layer.\n"
     "Decision: option (2), because it gives full isolation, lets each tenant evolve its "
     "mapping independently, and makes tenant deletion a single index drop, which "
     "simplifies GDPR erasure.\n"
     "Consequences: cluster state grows; we will raise the master nodes' heap to 16 GB. "
     "Reindexing a single tenant will take minutes instead of hours. Cross-tenant analytics "
     "queries used by internal BI will have to go through an alias over all indices.\n"
     "Benchmark: on a test cluster, a cluster-state update took 41 s with 2,000 empty "
     "indices and 2 s with 200. Our on-call runbook assumes a full cluster restart "
     "completes in under 30 minutes."),
    ("We got a bug bounty report about request smuggling between our CDN and the origin. "
     "Using the RFC 9112 text and the behaviour of the two parsers below, explain whether "
     "the attack works, how, and which component should change.\n"
     "\n"
     "RFC 9112, 6.1: A sender MUST NOT send a Content-Length header field in any message "
     "that contains a Transfer-Encoding header field.\n"
     "6.3: If a message is received with both a Transfer-Encoding and a Content-Length "
     "header field, the Transfer-Encoding overrides the Content-Length. Such a message "
     "might indicate an attempt to perform request smuggling or response splitting and "
     "ought to be handled as an error. An intermediary that chooses to forward the message "
     "MUST first remove the received Content-Length field and process the Transfer-Encoding "
     "prior to forwarding the message downstream.\n"
     "\n"
     "CDN: if Transfer-Encoding is present but its value is not exactly \"chunked\" (e.g. "
     "\"chunked \" with a trailing space), it ignores the header, frames the body by "
     "Content-Length and forwards both headers unchanged.\n"
     "Origin (a Go service behind our own proxy): trims whitespace, accepts \"chunked\" "
     "case-insensitively and prefers Transfer-Encoding whenever it is present.\n"
     "\n"
     "Reported request:\n"
     "POST /api/comments HTTP/1.1\n"
     "Host: app.example.com\n"
     "Content-Length: 44\n"
     "Transfer-Encoding: chunked \n"
     "\n"
     "0\n"
     "\n"
     "GET /admin/export HTTP/1.1\n"
     "X: x"),
]


def h4_greeting(rng: random.Random) -> str:
    return pick(rng, H4_GREET)


def h4_faq(rng: random.Random) -> str:
    return pick(rng, H4_FAQ)


def h4_classification(rng: random.Random) -> str:
    return pick(rng, H4_CLS)


def h4_hard(rng: random.Random) -> str:
    return pick(rng, H4_HARD)


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
    "heldout": {"greeting": h4_greeting, "faq": h4_faq,
                "short_classification": h4_classification, "hard": h4_hard},
    "dev3": {"greeting": h3_greeting, "faq": h3_faq,
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


TRAINING_FILE = DATA_DIR.parent.parent / "routing" / "request_examples.jsonl"
HELDOUT = ("heldout", 19)
TUNING = (("tune", 11), ("dev", 7), ("dev2", 13), ("dev3", 17))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    # The tuning families are what the shipped router learns from; the held-out one measures it.
    paths = [
        write_rows(DATA_DIR / "requests_heldout.jsonl", build_split(*HELDOUT)),
        write_rows(TRAINING_FILE, [row for family in TUNING for row in build_split(*family)]),
    ]
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}  {sum(1 for _ in path.open())} rows  sha256={digest}")
