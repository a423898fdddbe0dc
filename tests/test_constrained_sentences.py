"""The sentence rules of constrained reasons (issue 14, Amazon Beauty): what made 44% of the model's Beauty
reasons fail the fact check or stop half-way ("Shares Eau, Parfum, which you liked.", "This is a", "S&H S&S",
"This is a <liked title>, which you liked.") can no longer be written; each test fails on the code before."""

from recgen.config import PromptSettings
from recgen.data import Catalog, Item
from recgen.lm.constrained import WordVocabulary
from recgen.lm.constraint import SentenceRules, Vocabulary
from recgen.reasons.checker import ReasonChecker
from recgen.reasons.facts import DANGLING, names_title, short_name, title_head
from recgen.reasons.grounding import allowed_words, display_title, select_facts, sentence_rules, shared_attributes
from recgen.reasons.styles import ReasonRequest, style_for

LIKED = "Essie Nail Lacquer"
RULES = SentenceRules(must_name=True, no_end_after=DANGLING, after_phrase=frozenset({"liked"}),
                      not_before_phrase=frozenset({"is", "a", "this"}), once=frozenset({"nail", "product", "shares"}))
WORDS = ["Shares", "Nail", "with", "which", "you", "liked", "this", "is", "a", "product", "like", "Eau", "Parfum"]


def _vocab(rules=RULES):
    return WordVocabulary(WORDS, [LIKED], rules)


def test_a_sentence_ends_only_after_naming_the_liked_item():
    words = _vocab()
    assert not words.accepts("Shares Eau, Parfum", ".")
    assert not words.accepts("This is a", ".")  # and never on a dangling word
    assert words.accepts("Shares Nail with Essie Nail Lacquer", ".")
    assert words.accepts("Shares Nail with Essie Nail Lacquer, which you liked", ".")


def test_liked_only_once_the_liked_item_is_named():
    words = _vocab()
    assert not words.accepts("Shares Eau, Parfum, which you", " liked")
    assert words.accepts("Like Essie Nail Lacquer, which you", " liked")


def test_capitals_only_where_a_sentence_starts():
    words = _vocab()
    assert words.accepts("", "Shares") and words.accepts("", "This")
    assert not words.accepts("Shares Nail with", " A")  # "Alt A Bamboo": a capitalised "A" reads as a name
    assert not words.accepts("This is a", " Product")
    assert words.accepts("Shares Nail with Eau", " Parfum")  # a title word keeps its capital


def test_the_liked_item_is_never_called_the_recommendation():
    words = _vocab()
    assert not words.accepts("This is a", " Essie")
    assert words.accepts("Shares Nail with", " Essie")


def test_a_content_word_is_said_once():
    words = _vocab()
    assert not words.accepts("This product is a product", " ")
    assert words.accepts("Like Essie Nail Lacquer, a nail", " product")  # a word inside the name does not count
    assert not words.accepts("Shares Nail with Essie Nail Lacquer, a", " nail")


def test_exclamation_mark_in_a_title_is_no_sentence_end():
    words = WordVocabulary(["Shares", "Drama", "with", "which", "you", "liked"], ["Faster Pussycat! Kill! Kill! (1965)"],
                           RULES)
    text = "Shares Drama with Faster Pussycat!"
    assert not words.can_stop(text) and words.inside_phrase(text)
    assert words.accepts(text, " Kill")
    done = "Shares Drama with Faster Pussycat! Kill! Kill! (1965), which you liked."
    assert words.can_stop(done)


def test_rules_travel_in_the_prompts_vocabulary():
    settings = PromptSettings()
    item, liked = Item("p1", "Essie Nail Polish, Ballet Slippers, 0.46 Fluid Ounce"), Item("p2", LIKED)
    request = ReasonRequest([], [liked], None, settings)
    facts = select_facts(item, [liked], None)
    prompt = style_for("grounded").prompt(None, item, facts, request)
    assert isinstance(prompt.constraint, Vocabulary)
    rules = prompt.constraint.rules
    assert rules.must_name and "liked" in rules.after_phrase and "with" in rules.no_end_after
    assert rules == sentence_rules(select_facts(item, [liked], None), settings.title_chars)


def test_short_name_is_brand_and_product_words_and_names_the_item():
    title = "Eucerin Original Healing Soothing Repair Creme, 16-Ounce Jars (Pack of 2)"
    assert title_head(title) == "Eucerin Original Healing Soothing Repair Creme"
    assert short_name(title) == "Eucerin Original Healing Soothing Repair Creme"  # the main part whole, never cut
    assert title_head("Tigi Masterpiece Shine Hairspray 9.5 oz") == "Tigi Masterpiece Shine Hairspray"
    assert short_name("Argan Oil For Hair Treatment and Elixir Serum Best Hair Care Leave-In Conditioner") == \
        "Argan Oil For Hair Treatment and Elixir"
    assert short_name("Toy Story (1995)") == "Toy Story"  # a short title stays whole
    assert display_title("Usual Suspects, The (1995)") == "The Usual Suspects (1995)"
    assert names_title(f"Close to {short_name(title)}, which you liked.", title)
    assert not names_title("Close to Eucerin Original, which you liked.", title)  # half a name is no name
    catalog = Catalog([Item("p1", "Aquaphor Healing Ointment"), Item("p2", title)])
    reason = f"Shares Healing with {display_title(title)}, which you liked."
    assert ReasonChecker(catalog).problems(reason, catalog.get("p1"), [catalog.get("p2")]) == []


def test_sizes_are_not_what_two_products_share():
    a = Item("p1", "Paul Mitchell Tea Tree Special Shampoo, 16.9 Fluid Ounce")
    b = Item("p2", "CHI Silk Infusion, 6 Fluid Ounce")
    c = Item("p3", "Paul Mitchell Awapuhi Shampoo 10.14 Fluid Ounce")
    assert shared_attributes(a, b) == ()
    assert shared_attributes(a, c) == ()  # "Paul Mitchell ... Shampoo" is the liked item's name already
    d = Item("p4", "John Frieda Frizz Ease Daily Nourishment Leave-In Conditioner and Shampoo")
    assert shared_attributes(a, d) == ("Shampoo",)  # beyond d's short name


def test_a_title_starts_only_after_finished_words():
    words = _vocab()
    assert not words.accepts("Shares Nail with Ess", " Essie")  # "Fres Fres Fresh": half a title, then the title
    assert not words.accepts("Shares Nail wi", " Essie")  # half a free word, then the title
    assert words.accepts("Shares Nail with", " Essie")


def test_no_half_word_the_rules_would_refuse_to_finish():
    words = _vocab()
    assert not words.accepts("Shares Nail with", " Na")  # "Shares Essie Nail with Na": "Nail" is said already


def test_the_name_comes_early_and_the_sentence_ends_soon_after():
    rules = SentenceRules(must_name=True, no_end_after=DANGLING, name_within=4, tail_words=3,
                          openers=frozenset({"shares", "like"}))
    words = WordVocabulary(WORDS, [LIKED], rules)
    assert not words.accepts("", "This") and words.accepts("", "Shares")
    assert not words.accepts("Like a product with", " which")  # a fifth free word before the name
    assert words.accepts("Like a product with", " Essie")
    assert not words.accepts("Like Essie Nail Lacquer, which you liked", " this")
    assert words.accepts("Like Essie Nail Lacquer, which you liked", ".")


def test_quotes_and_brackets_only_inside_a_title():
    words = _vocab()
    assert not words.accepts("Shares Nail with Essie Nail Lacquer, which you", "\u2019")
    assert not words.accepts("Like", ":") and not words.accepts("Shares Nail with", " (")
    assert words.accepts("Shares Nail", ",") and words.accepts("Shares Nail,", " with")


def test_a_sentence_does_not_open_with_the_liked_item_or_share_nothing():
    words = WordVocabulary(WORDS, [LIKED], SentenceRules(must_name=True, openers=frozenset({"shares", "like"}),
                                                         not_before_phrase=frozenset({"shares"})))
    assert not words.accepts("", "Essie") and words.accepts("", "Like")
    assert not words.accepts("Shares", " Essie")  # "Shares <liked item>, which you liked."


def test_shares_only_with_something_shared():
    settings = PromptSettings()
    item, liked = Item("p1", "Mizani Thermasmooth Shine Serum"), Item("p2", "Mizani Smooth Guard Serum")
    facts = select_facts(item, [liked], None)
    assert facts.shared == ()  # "Mizani" and "Serum" are in the liked item's name already
    assert "Shares" not in allowed_words(facts, settings.title_chars)
    assert "shares" not in allowed_words(facts, settings.title_chars)


def test_a_brand_alone_is_no_name():
    assert short_name("L'Oreal Paris: Superior Preference Hair Color, LB-01 Extra Light Ash Blonde") == \
        "L'Oreal Paris: Superior Preference Hair Color"


def test_relation_verbs_are_not_free_words():
    facts = select_facts(Item("p1", "Mizani Thermasmooth Shine Serum"), [Item("p2", "Mizani Smooth Guard Serum")], None)
    words = {w.lower() for w in allowed_words(facts, PromptSettings().title_chars)}
    assert not words & {"made", "makes", "must", "user", "they"}  # "a product that is made with <liked item>"


def test_no_comma_after_an_opener_and_the_liked_item_named_once():
    rules = SentenceRules(must_name=True, no_comma_after=frozenset({"like", "another"}))
    words = WordVocabulary(WORDS, [LIKED], rules)
    assert not words.accepts("Like", ",") and words.accepts("Shares Nail", ",")
    assert not words.accepts("Like Essie Nail Lacquer, which is", " Essie")


def test_a_free_word_is_written_in_its_own_tokens(smollm_tokenizer_dir):
    from transformers import AutoTokenizer

    from recgen.lm.constrained import AllowedTokens

    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    allowed = AllowedTokens(tokenizer, {tokenizer.eos_token_id})
    words = WordVocabulary(["Similar", "to"], [LIKED], boundaries=allowed.boundaries)
    whole = [allowed.text(i) for i in tokenizer("Similar", add_special_tokens=False)["input_ids"]]
    assert words.accepts("", whole[0])
    if len(whole[0]) > 3:
        assert not words.accepts("", whole[0][:3])  # "Sim" + "ila" then nothing finishes "Similar"


def test_liked_only_as_which_you_liked_then_the_end():
    """Hand-graded grounded-r3: "you liked the product", "fans of The Game loved the action-drama genre" and
    "Fans of Sci-Fi, which you like ..." said what the facts do not hold."""
    rules = SentenceRules(must_name=True, after_phrase=frozenset({"liked", "loved"}), claim_subject="you")
    words = WordVocabulary(WORDS + ["Fans", "of", "loved", "the", "Sci", "Fi"], [LIKED], rules)
    assert words.accepts("Like Essie Nail Lacquer, which you", " liked")
    assert not words.accepts("Like Essie Nail Lacquer, which you liked", " the")
    assert not words.accepts("Fans of Essie Nail Lacquer", " loved")  # not said of the user
    assert not words.accepts("Fans of Sci-Fi, which you", " like")


def test_no_claims_about_the_history_order_or_rank():
    facts = select_facts(Item("p1", "Mizani Thermasmooth Shine Serum"), [Item("p2", "Mizani Smooth Guard Serum")], None)
    words = {w.lower() for w in allowed_words(facts, PromptSettings().title_chars)}
    assert not words & {"recent", "previous", "most", "only"}  # "the most recent <liked item>" was false
    rules = sentence_rules(facts, PromptSettings().title_chars)
    assert "recommended" in rules.not_before_phrase  # "the recommended <liked item>"
