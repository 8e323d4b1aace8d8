"""Reply text: the new part of a message without quoted history and signature, in many languages."""

from __future__ import annotations

import pathlib
import re

import pytest

from channels.email.parse import parse_email
from channels.email.reply import split_reply
from channels.html import html_to_text

CORPUS = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
MISSING = f"the shared email corpus is not next to the repository ({CORPUS})"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=MISSING)


def _read(relative: str) -> str:
    return (CORPUS / relative).read_bytes().decode("utf-8")


# --- corpus expectations: mailgun/talon -----------------------------------------------------------


@needs_corpus
@pytest.mark.parametrize("name", ["iphone", "sparrow"])
def test_quote_stripped_text_matches_talon_expectation(name):
    """talon's `<x>_reply_text` is the message without its quotation (the signature stays)."""
    message = parse_email((CORPUS / "mailgun-talon" / "standard_replies" / f"{name}.eml").read_bytes())
    expected = _read(f"mailgun-talon/standard_replies/{name}_reply_text")
    assert split_reply(message.text, message.sender.display_name).unquoted == expected.rstrip("\n")


@needs_corpus
@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("aol", "Hello"),  # -----Original Message----- and a long To: line
        ("apple_mail_2", "Hello"),  # the quote header itself is quoted
        ("comcast", "Hello "),  # ----- Original Message ----- with spaces
        ("hotmail", "Hello"),  # ">"-quoted header fields
        ("iphone", "Hello"),
        ("outlook", "Hello"),  # From:/Sent:/To:/Subject: block
        ("sparrow", "Hello "),
        ("yahoo", "Hello"),
    ],
)
def test_talon_standard_replies_keep_only_the_new_text(name, reply):
    message = parse_email((CORPUS / "mailgun-talon" / "standard_replies" / f"{name}.eml").read_bytes())
    assert message.reply_text == reply


@needs_corpus
@pytest.mark.parametrize(
    ("name", "unquoted"),
    [
        ("html_replies/gmail.html", "Hi. I am fine. Thanks, Alex"),  # div.gmail_quote
        ("html_replies/hotmail.html", "Hi. I am fine. Thanks, Alex"),  # hr#stopSpelling, Date: first
        ("html_replies/ms_outlook_2003.html", "Hi. I am fine. Thanks, Alex"),  # field names on their own line
        ("html_replies/ms_outlook_2007.html", "Hi. I am fine. Thanks, Alex"),
        ("html_replies/ms_outlook_2010.html", "Hi. I am fine. Thanks, Alex"),  # "On Behalf Of" line
        ("html_replies/thunderbird.html", "Hi. I am fine. Thanks, Alex"),  # moz-cite-prefix
        ("OLK_SRC_BODY_SECTION.html", "Reply"),
        ("reply-separated-by-hr.html", "Hi there Bob"),
    ],
)
def test_html_replies_from_talon_lose_their_quotation(name, unquoted):
    text = html_to_text(_read(f"mailgun-talon/{name}"))
    assert " ".join(split_reply(text).unquoted.split()) == unquoted


@needs_corpus
@pytest.mark.parametrize("name", ["jeff", "long", "sparse"])
def test_signature_matches_talon_expectation(name):
    folder = "mailgun-talon/signature/emails/stripped"
    body, sender = _read(f"{folder}/{name}_body"), _read(f"{folder}/{name}_sender").strip()
    parts = split_reply(body, sender)
    assert parts.signature == _read(f"{folder}/{name}_signature").strip("\n")
    assert parts.reply == body[: body.index(parts.signature)].strip("\n")


@needs_corpus
def test_signature_matches_talon_annotated_sample():
    """In talon's annotated samples, "#sig#" marks signature lines and "#reply#" quoted ones."""
    raw = _read("mailgun-talon/signature/emails/P/102682_R_S")
    lines = raw.split("\n\n", 1)[1].split("\n")
    body = "\n".join(re.sub(r"^#(?:reply|sig)#", "", line) for line in lines)
    signature = "\n".join(line.removeprefix("#sig#") for line in lines if line.startswith("#sig#"))
    parts = split_reply(body, "John Doe")
    assert parts.signature == signature.strip("\n")
    assert parts.reply.startswith("I like the xxx a lot") and parts.reply.endswith("ARHGGHRGHH!")


@needs_corpus
def test_russian_signature_from_talon_sample():
    body = _read("mailgun-talon/signature/emails/P/unicode_msg").split("\n", 1)[1]
    parts = split_reply(body, "Сергей Обухов")
    assert parts.signature == "С уважением,\nСергей Обухов"
    assert parts.reply.endswith("ответьте на это письмо.")


# --- corpus: reply fixtures in many languages (expected values read off each file) ---------------

# file -> (first line of the reply, last line of the reply, first line of the signature or "")
_REPLY_FIXTURES = {
    # alfonsrv/mail-parser-reply
    "alfonsrv-mail-parser-reply/caution.txt": ("Hi lads's Team,", "job at our end.", "Thanks,"),
    "alfonsrv-mail-parser-reply/caution2.txt": ("Hello,", "Person Person.", "Disclaimer"),
    "alfonsrv-mail-parser-reply/email_1_3.txt": ("Oh thanks.", "Having the function would be great.", "-Abhishek Kona"),
    "alfonsrv-mail-parser-reply/email_1_4.txt": (
        "Awesome! I haven't had another problem with it.", "Awesome! I haven't had another problem with it.", "",
    ),
    "alfonsrv-mail-parser-reply/email_1_6.txt": (
        "I get proper rendering as well.", "Sent from a magnificent torch of pixels", "",
    ),
    "alfonsrv-mail-parser-reply/email_1_7.txt": (":+1:", ":+1:", ""),
    "alfonsrv-mail-parser-reply/email_1_8.txt": ("I will reply under this one", "and under this.", "--"),
    "alfonsrv-mail-parser-reply/email_2_2.txt": (
        "Outlook with a reply directly above line", "Outlook with a reply directly above line", "",
    ),
    "alfonsrv-mail-parser-reply/email_2_3.txt": (
        "Outlook with a reply above headers using unusual format",
        "Outlook with a reply above headers using unusual format",
        "",
    ),
    "alfonsrv-mail-parser-reply/email_3_1.txt": ("First reply.", "This is fairly common; nothing too hard here!", ""),
    "alfonsrv-mail-parser-reply/email_danish_1.txt": ("Hej Peter,", "Tak for din mail. Det lyder godt.", "Med venlig hilsen"),
    "alfonsrv-mail-parser-reply/email_danish_2.txt": ("Hej Hanne,", "Jeg har modtaget filerne.", "Hilsen"),
    "alfonsrv-mail-parser-reply/email_danish_4.txt": ("Hej,", "Svar.", ""),
    "alfonsrv-mail-parser-reply/email_danish_5.txt": ("Hej,", "Svar.", "Kh"),
    "alfonsrv-mail-parser-reply/email_headers_no_delimiter.txt": ("And another reply!", "And another reply!", ""),
    "alfonsrv-mail-parser-reply/email_ja_1_2.txt": ("田中様", "それでは 11:00 にお待ちしております。", "以上、よろしくお願いいたします"),
    "alfonsrv-mail-parser-reply/email_nl_1_1.txt": ("Hallo allemaal,", "Ik gebruik momenteel de Java HTTP API.", "-Maarten de Jong"),
    "alfonsrv-mail-parser-reply/email_nl_1_2.txt": ("Outlook met een antwoord", "Outlook met een antwoord", ""),
    "alfonsrv-mail-parser-reply/email_partial_quote_header.txt": (
        "On your remote host you can run:", "fails, the tunnel is not working.", "",
    ),
    "alfonsrv-mail-parser-reply/email_pl_1_1.txt": ("Czesc Anno,", "Jak się masz?", "Pozdrawiam,"),  # header block on top
    "alfonsrv-mail-parser-reply/email_pl_1_2.txt": ("Czesc Anno,", "Jak się masz?", "Pozdrawiam,"),
    "alfonsrv-mail-parser-reply/email_pl_1_3.txt": ("Cześć Anno,", "Jak się masz?", "Z powazaniem,"),
    "alfonsrv-mail-parser-reply/email_sent_from_BlackBerry.txt": ("Here is another email", "Here is another email", "Sent from my BlackBerry"),
    "alfonsrv-mail-parser-reply/email_sent_from_multi_word_mobile_device.txt": (
        "Here is another email", "Here is another email", "Sent from my Verizon Wireless BlackBerry",
    ),
    "alfonsrv-mail-parser-reply/email_sent_from_not_signature.txt": (
        "Here is another email", "Sent from my desk, is much easier than my mobile phone.", "",
    ),
    "alfonsrv-mail-parser-reply/email_sig_delimiter_in_middle_of_line.txt": ("Hi there!", "kthxbai", ""),
    "alfonsrv-mail-parser-reply/email_sv_anon_1.txt": ("Hej", "flexibel fram till kl 15 idag.", "Mvh,"),
    "alfonsrv-mail-parser-reply/greedy_on.txt": ("On your remote host you can run:", "fails, the tunnel is not working.", ""),
    "alfonsrv-mail-parser-reply/multi_header.txt": (
        "No problem. I’ll just start a new order.", "No problem. I’ll just start a new order.", "",
    ),
    "alfonsrv-mail-parser-reply/multiline_on_de.txt": ("Am heutigen Tage", "Am heutigen Tage", ""),
    "alfonsrv-mail-parser-reply/pathological.txt": (
        "I think you're onto something. I will try to fix the problem as soon as I", "get back to a computer.", "",
    ),
    # zapier/email-reply-parser (the files that differ from the ones above)
    "zapier-email-reply-parser/email_1_2.txt": ("Hi,", 'the keys in a bucket, you’ll need to delete them all individually."', ""),
    "zapier-email-reply-parser/email_1_7.txt": (":+1:", ":+1:", ""),
    "zapier-email-reply-parser/email_BlackBerry.txt": ("Here is another email", "Here is another email", "Sent from my BlackBerry"),
}  # fmt: skip


def _fixture_cases() -> list:
    if not CORPUS.is_dir():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=MISSING))]
    return [pytest.param(name, expected, id=name) for name, expected in _REPLY_FIXTURES.items()]


@pytest.mark.parametrize(("name", "expected"), _fixture_cases())
def test_reply_fixtures_split_into_reply_and_signature(name, expected):
    first, last, signature = expected
    parts = split_reply(_read(name))
    lines = parts.reply.splitlines()
    assert (lines[0].strip(), lines[-1].strip()) == (first, last)
    assert (parts.signature.splitlines() or [""])[0].strip() == signature
    assert ">" not in parts.reply.replace("->", "")  # no quoted line leaks into the reply


@needs_corpus
def test_interleaved_answers_are_kept_and_quotes_dropped():
    parts = split_reply(_read("zapier-email-reply-parser/email_1_2.txt"))
    assert "You can list the keys for the bucket" in parts.reply
    assert "What is the best way to clear a Riak bucket" not in parts.reply  # the quoted question
    assert "What is the best way to clear a Riak bucket" in parts.quote
    assert "riak-users mailing list" in parts.quote  # the list footer after the last quote is not an answer


@needs_corpus
def test_indentation_and_trailing_spaces_survive():
    parts = split_reply(_read("alfonsrv-mail-parser-reply/email_partial_quote_header.txt"))
    assert "\n     telnet 127.0.0.1 52698\n" in parts.reply
    assert "If that \nfails" in parts.reply


# --- inline samples for languages and clients the corpus does not cover --------------------------


@pytest.mark.parametrize(
    ("text", "reply", "signature"),
    [
        pytest.param(
            "Merci, c'est réglé.\n\nCordialement,\nJean\n\n"
            "Le lun. 4 mars 2024 à 10:12, Marie Dupont <marie@example.fr> a écrit :\n> Bonjour,\n> ma commande ?\n",
            "Merci, c'est réglé.", "Cordialement,\nJean", id="fr-gmail",
        ),
        pytest.param(
            "Bonjour,\n\nVoici la facture.\n\nBien cordialement,\nJean\n\n"
            "De : Support <support@example.com>\nEnvoyé : lundi 4 mars 2024 10:12\nÀ : Jean <jean@example.fr>\n"
            "Objet : RE: Facture\n\nBonjour Jean,\nmerci.\n",
            "Bonjour,\n\nVoici la facture.", "Bien cordialement,\nJean", id="fr-outlook",
        ),
        pytest.param(
            "Gracias por la ayuda.\n\nSaludos,\nAna\n\n"
            "El lun, 4 mar 2024 a las 10:12, Pedro Gil (<pedro@example.es>) escribió:\n> Hola Ana\n",
            "Gracias por la ayuda.", "Saludos,\nAna", id="es-gmail",
        ),
        pytest.param(
            "Va bene, grazie.\n\nCordiali saluti\nMarco\n\n"
            "Il giorno lun 4 mar 2024 alle ore 10:12 Luca Bianchi <luca@example.it> ha scritto:\n> Ciao Marco\n",
            "Va bene, grazie.", "Cordiali saluti\nMarco", id="it-gmail",
        ),
        pytest.param(
            "Tudo certo.\n\nAtenciosamente,\nJoão\n\n"
            "Em seg., 4 de mar. de 2024 às 10:12, Maria Souza <maria@example.com.br> escreveu:\n> Olá João\n",
            "Tudo certo.", "Atenciosamente,\nJoão", id="pt-gmail",
        ),
        pytest.param(
            "Dat klopt.\n\nMet vriendelijke groet,\nJan\n\n"
            "Op ma 4 mrt 2024 om 10:12 schreef Piet de Vries <piet@example.nl>:\n> Hoi Jan\n",
            "Dat klopt.", "Met vriendelijke groet,\nJan", id="nl-gmail",
        ),
        pytest.param(
            "Die Rechnung ist angekommen.\n\nMit freundlichen Grüßen\nMax Muster\n\n"
            "Von: Support <support@example.com>\nGesendet: Montag, 4. März 2024 10:12\nAn: Max <max@example.de>\n"
            "Betreff: AW: Rechnung\n\nHallo Max,\n",
            "Die Rechnung ist angekommen.", "Mit freundlichen Grüßen\nMax Muster", id="de-outlook",
        ),
        pytest.param(
            "Tack, det fungerar nu.\n\nMed vänliga hälsningar\nAnna\n\n"
            "Från: Support <support@example.com>\nSkickat: den 4 mars 2024 10:12\nTill: Anna <anna@example.se>\n"
            "Ämne: SV: Faktura\n\nHej Anna,\n",
            "Tack, det fungerar nu.", "Med vänliga hälsningar\nAnna", id="sv-outlook",
        ),
        pytest.param(
            "Dziękuję, działa.\n\nPozdrawiam\nJan\n\n"
            "pon., 4 mar 2024 o 10:12 Anna Nowak <anna@example.pl> napisał(a):\n> Cześć Jan\n",
            "Dziękuję, działa.", "Pozdrawiam\nJan", id="pl-gmail",
        ),
        pytest.param(
            "Děkuji, už to funguje.\n\nS pozdravem\nPetr\n\n"
            "Dne po 4. 3. 2024 10:12 uživatel Jana Nová <jana@example.cz> napsal:\n> Dobrý den\n",
            "Děkuji, už to funguje.", "S pozdravem\nPetr", id="cs-gmail",
        ),
        pytest.param(
            "Спасибо, всё работает.\n\nС уважением,\nИван\n\n"
            "4 марта 2024 г., 10:12 пользователь Пётр Иванов <petr@example.ru> написал:\n> Добрый день\n",
            "Спасибо, всё работает.", "С уважением,\nИван", id="ru-gmail",
        ),
        pytest.param(
            "Спасибо!\nВсё получил.\n\nпн, 4 мар. 2024 г. в 10:12, Пётр Иванов <petr@example.ru>:\n> Добрый день\n",
            "Спасибо!\nВсё получил.", "", id="ru-gmail-without-verb",
        ),
        pytest.param(
            "收到，谢谢。\n\n此致\n张三\n\n张伟 <zhang.wei@example.cn> 于2024年3月4日周一 10:12写道：\n> 你好\n",
            "收到，谢谢。", "此致\n张三", id="zh-gmail",
        ),
        pytest.param(
            "发票已收到。\n\n发件人: 客服 <support@example.com>\n发送时间: 2024年3月4日 10:12\n收件人: 张三 <zhang@example.cn>\n"
            "主题: 回复: 发票\n\n您好\n",
            "发票已收到。", "", id="zh-outlook",
        ),
        pytest.param(
            "承知しました。\n\n差出人: サポート <support@example.com>\n送信日時: 2024年3月4日 10:12\n宛先: 田中 <tanaka@example.jp>\n"
            "件名: RE: 請求書\n\n田中様\n",
            "承知しました。", "", id="ja-outlook",
        ),
        pytest.param(
            "תודה, הבעיה נפתרה.\n\nבברכה,\nדוד\n\n"
            "\u202bבתאריך יום ב׳, 4 במרץ 2024 ב-10:12 מאת \u202aרות לוי\u202c\u200f <\u202aruth@example.co.il\u202c\u200f>:\u202c\n"
            "> שלום דוד\n",
            "תודה, הבעיה נפתרה.", "בברכה,\nדוד", id="he-gmail",
        ),
        pytest.param(
            "확인했습니다.\n\n감사합니다.\n김철수\n\n2024년 3월 4일 (월) 오전 10:12, 이영희 <lee@example.kr>님이 작성:\n> 안녕하세요\n",
            "확인했습니다.", "감사합니다.\n김철수", id="ko-gmail",
        ),
        pytest.param(
            "Kiitos, nyt toimii.\n\nTerveisin\nMatti\n\nma 4.3.2024 klo 10.12 Liisa Virtanen (liisa@example.fi) kirjoitti:\n> Hei\n",
            "Kiitos, nyt toimii.", "Terveisin\nMatti", id="fi-gmail",
        ),
        pytest.param(
            "Thanks, that fixed it.\n\nSent from my iPhone\n\n> On 4 Mar 2024, at 10:12, Support <support@example.com> wrote:\n>\n> Hi\n",
            "Thanks, that fixed it.", "Sent from my iPhone", id="en-apple-mail-quoted-header",
        ),
        pytest.param(
            "Hi,\n\nThe invoice still shows the wrong VAT.\n\nThanks,\nMaria Lopez\nACME Ltd.\n+46 70 123 45 67\n\n"
            "________________________________\nFrom: Support <support@example.com>\nSent: Monday, March 4, 2024 10:12 AM\n"
            "To: Maria Lopez <maria@example.org>\nSubject: RE: VAT\n\nHello Maria,\n",
            "Hi,\n\nThe invoice still shows the wrong VAT.", "Thanks,\nMaria Lopez\nACME Ltd.\n+46 70 123 45 67",
            id="en-outlook-underscores",
        ),
        pytest.param(
            "-----Ursprüngliche Nachricht-----\nVon: Support\nGesendet: Montag\nAn: Max\nBetreff: Test\n\nHallo\n",
            "", "", id="forward-without-a-note-has-no-reply",
        ),
    ],
)  # fmt: skip
def test_reply_and_signature_in_many_languages(text, reply, signature):
    parts = split_reply(text)
    assert (parts.reply, parts.signature) == (reply, signature)


def test_text_without_quote_or_signature_is_all_reply():
    text = "Hello,\n\n  my order 1234 never arrived.\nCan you check?"
    assert split_reply(text) == split_reply(text)  # deterministic
    parts = split_reply(text)
    assert (parts.reply, parts.signature, parts.quote) == (text, "", "")


def test_a_closing_that_starts_a_long_paragraph_is_not_a_signature():
    text = (
        "Thanks!\n\nI also noticed that the export is broken.\nIt fails on every CSV file.\nIt worked last week.\n"
        "Nothing changed on our side.\nWe use Firefox.\nAnd Chrome too.\nBoth fail.\nPlease help."
    )
    assert split_reply(text).reply == text


def test_sender_name_marks_the_signature():
    text = "The app crashes when I upload a PDF.\n\nMaria Lopez\nHead of Finance, ACME\n+46 70 123 45 67"
    parts = split_reply(text, sender_name="Maria Lopez")
    assert parts.reply == "The app crashes when I upload a PDF."
    assert parts.signature.startswith("Maria Lopez")


def test_external_sender_banner_is_not_part_of_the_reply():
    text = "[EXTERNAL] This email came from outside the organization. Be careful with links.\n\nHello, please reset my password."
    assert split_reply(text).reply == "Hello, please reset my password."


def test_carriage_returns_are_normalized():
    parts = split_reply("Fine.\r\n\r\nOn Mon, 4 Mar 2024 at 10:12, Bob <bob@example.com> wrote:\r\n> Hi\r\n")
    assert (parts.reply, parts.quote) == (
        "Fine.",
        "On Mon, 4 Mar 2024 at 10:12, Bob <bob@example.com> wrote:\n> Hi",
    )
