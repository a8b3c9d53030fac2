from components.normalise import normalise_tweet


def test_html_entities_are_unescaped():
    assert normalise_tweet("fish &amp; chips &gt; salad") == "fish & chips > salad"


def test_mentions_become_the_user_placeholder():
    assert normalise_tweet("@VirginAmerica thanks @jo_99!") == "@user thanks @user!"


def test_links_become_one_token():
    text = "see https://t.co/AbC123 and http://x.io/a?b=1 or www.example.com/page"
    assert normalise_tweet(text) == "see http and http or http"


def test_whitespace_is_collapsed_and_stripped():
    assert normalise_tweet("  so \n\n  tired\t today ") == "so tired today"


def test_email_addresses_are_not_mentions():
    assert normalise_tweet("mail me at a@b.com") == "mail me at a@b.com"
