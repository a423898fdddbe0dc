"""Issue 26 item 5: titles as people read them, reasons tied to the request, lists that do not repeat
themselves, likeness only on evidence, and request words nothing used reported back."""

from __future__ import annotations

import json

from recgen.data.catalog import Catalog, Item
from recgen.reasons.facts import short_name
from recgen.reasons.grounding import display_title
from recgen.text import plain_title


def test_titles_are_decoded_once_at_the_data_boundary():
    assert plain_title("Tom Clancy&rsquo;s Ghost Recon &amp; More") == "Tom Clancy\u2019s Ghost Recon & More"
    assert plain_title("Rock &amp;amp; Roll  Racing ") == "Rock & Roll Racing"  # escaped twice
    assert plain_title("AT&T 5 < 6") == "AT&T 5 < 6"  # no entity: unchanged
    row = {"item_id": "g1", "title": "Ratchet &amp; Clank&trade;", "genres": "Action &amp; Adventure"}
    item = Catalog.from_jsonl_text(json.dumps(row) + "\n", "items.jsonl").get("g1")
    assert item.title == "Ratchet & Clank\u2122" and item.genres == ("Action & Adventure",)


def test_names_are_never_cut_inside():
    title = "Scooby-Doo and the Haunting of Castle Mallow - Nintendo DS"
    assert short_name(title) == "Scooby-Doo and the Haunting of Castle Mallow"
    assert display_title(title) == "Scooby-Doo and the Haunting of Castle Mallow"
    run_on = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Mu Nu Xi Omicron Pi Rho Sigma Tau"
    cut = short_name(run_on)  # no separator and too long to write whole: cut at a word, never inside one
    assert len(cut) <= 40 and run_on.startswith(cut) and run_on[len(cut)] == " "
