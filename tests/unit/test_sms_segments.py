"""SMS segment counting: GSM-7 with its extension table, UCS-2 in UTF-16 units, splits never inside a pair."""

import pytest

from channels.sms.segments import MAX_SEGMENTS, Encoding, count_segments, non_gsm_characters, sms_body

EMOJI = "\N{GRINNING FACE}"  # outside the BMP: a surrogate pair, two UTF-16 units


@pytest.mark.parametrize(("text", "units", "segments"), [
    ("", 0, 0),
    ("Hello, your order #1042 has shipped.", 36, 1),
    ("a" * 160, 160, 1),
    ("a" * 161, 161, 2),
    ("a" * 306, 306, 2),
    ("a" * 307, 307, 3),
    ("a" * 1530, 1530, 10),
    ("a" * 1531, 1531, 11),
    # The whole basic table (Greek capitals, accented letters, £ ¥ § ¿ ¡) stays GSM-7.
    ("@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", 42, 1),
    ("Line one\nLine two", 17, 1),
])
def test_gsm7_texts_count_one_septet_per_character(text, units, segments):
    count = count_segments(text)
    assert (count.encoding, count.units, count.segments) == (Encoding.GSM7, units, segments)
    assert count.non_gsm_characters == ()


@pytest.mark.parametrize(("text", "units", "segments"), [
    ("Price: 5€", 10, 1),                    # € is in the extension table: two septets
    ("{}[]~|^\\€", 18, 1),
    ("€" * 80, 160, 1),                      # exactly fills one segment
    ("€" * 81, 162, 2),
    ("a" * 159 + "€", 161, 2),              # one extension character tips it over 160
    # 152 plain + € would be 154 septets: the escape pair may not straddle segments, so € starts segment 2.
    ("a" * 152 + "€" + "a" * 10, 164, 2),
    ("€" * 77 + "a", 155, 1),
    ("€" * 80 + "a", 161, 2),
    # A 153-septet segment holds at most 76 whole € pairs: 153 of them (306 septets) need 3 segments,
    # where ceil(306 / 153) would say 2.
    ("€" * 153, 306, 3),
    ("€" * 152, 304, 2),
    ("a" + "€" * 152 + "a", 306, 2),          # here the pairs line up with the boundaries
])
def test_gsm7_extension_characters_take_two_septets(text, units, segments):
    count = count_segments(text)
    assert (count.encoding, count.units, count.segments) == (Encoding.GSM7, units, segments)


def test_an_escape_pair_that_would_straddle_a_segment_boundary_moves_to_the_next_segment():
    # 306 septets would be exactly 2 segments, but the 153rd-154th septets are one escape pair.
    text = "a" * 152 + "€" + "a" * 152
    count = count_segments(text)
    assert (count.units, count.segments) == (306, 3)


@pytest.mark.parametrize(("text", "units", "segments"), [
    ("שלום, ההזמנה שלך נשלחה", 22, 1),                          # Hebrew
    ("שלום" * 17 + "שלו", 71, 2),                               # Hebrew, 71 units
    ("您好，您的订单已发货。", 11, 1),                              # Chinese
    ("中" * 70, 70, 1),
    ("中" * 71, 71, 2),
    ("中" * 134, 134, 2),
    ("中" * 135, 135, 3),
    (EMOJI, 2, 1),                                                # one emoji is two units
    (EMOJI * 35, 70, 1),
    (EMOJI * 36, 72, 2),
    ("Thanks! " + EMOJI, 10, 1),                                  # one emoji turns the whole text UCS-2
    ("é ç ñ ü ê", 9, 1),                                          # é ñ ü are GSM-7; ç and ê are not
])
def test_ucs2_texts_count_utf16_code_units(text, units, segments):
    count = count_segments(text)
    assert (count.encoding, count.units, count.segments) == (Encoding.UCS2, units, segments)


def test_a_surrogate_pair_is_never_split_across_segments():
    # 66 units, then an emoji at units 67-68: it does not fit in the first 67-unit segment whole.
    text = "中" * 66 + EMOJI + "中" * 66
    count = count_segments(text)
    assert count.units == 134
    assert count.segments == 3  # ceil(134 / 67) would say 2, but the pair moves to segment 2 whole
    assert count_segments(EMOJI * 67).segments == 3  # 33 pairs fit in 67 units, not 33.5


def test_the_characters_that_force_ucs2_are_named_once_each_in_order():
    assert non_gsm_characters("Café ça va? ça" + EMOJI) == ("ç", EMOJI)
    assert count_segments("naïve").non_gsm_characters == ("ï",)


def test_browser_line_ends_count_as_one_character_as_they_are_sent():
    assert sms_body("one\r\ntwo") == "one\ntwo"
    assert count_segments("a\r\n" * 80).units == 160


def test_the_segment_limit_is_ten():
    assert MAX_SEGMENTS == 10
    assert count_segments("a" * 1530).segments == MAX_SEGMENTS


SAMPLES = ["", "Hello", "a" * 161, "€" * 153, "a" * 152 + "€" + "a" * 152, "Price: 5€ {x}", "שלום" * 18,
           "您好，您的订单已发货。" * 8, EMOJI * 67, "中" * 66 + EMOJI + "中" * 66, "one\r\ntwo", "Café ça va? " * 14]


def test_the_composer_script_counts_exactly_like_the_server(repo_root):
    import json
    import shutil
    import subprocess

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node to run static/sms_counter.js")
    harness = (
        "global.window = {}; global.document = {querySelector: () => null, getElementById: () => null};"
        f"require({json.dumps(str(repo_root / 'static' / 'sms_counter.js'))});"
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(input.map(t => { const c = window.countSmsSegments(t);"
        " return [c.encoding, c.characters, c.units, c.segments, c.perSegment, c.outside]; })));"
    )
    result = subprocess.run([node, "-e", harness], input=json.dumps(SAMPLES), capture_output=True, text=True,
                            timeout=30, check=True)
    expected = []
    for text in SAMPLES:
        count = count_segments(text)
        expected.append([str(count.encoding), count.characters, count.units, count.segments,
                         count.units_per_segment, list(count.non_gsm_characters)])
    assert json.loads(result.stdout) == expected
