"""Split an email's plain text into the new reply, its signature and the quoted history.

Works line by line on the text as written (indentation and trailing spaces survive), in many
languages. It recognizes:

- quote headers: "On <date>, <name> wrote:" and its translations, Outlook header blocks
  ("From:/Sent:/To:/Subject:" in many languages), "-----Original Message-----" separators and
  forwarded-message markers;
- ">" quoted lines, including answers written between quoted blocks (interleaved replies) and
  replies written below the quote (bottom posting);
- signatures: the "-- " delimiter, "Sent from my iPhone"-style footers, closings ("Best regards",
  "Med venlig hilsen", "よろしくお願いいたします" ...), the sender's name, "-Name" sign-offs,
  separator lines and legal disclaimers near the end;
- "CAUTION: this email originated from outside" banners at the top, which are not the reply.

It is a heuristic: when unsure it keeps text in the reply, since hiding a customer's words is worse
than showing a few lines of history.
"""

from __future__ import annotations

import dataclasses
import re

_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\u00ad]")


def _plain(line: str) -> str:
    """Return `line` without invisible marks (BOM, bidi controls) and surrounding blanks."""
    return _INVISIBLE.sub("", line).strip()


def _is_quoted(line: str) -> bool:
    return _plain(line).startswith(">")


# --- quote headers ("On ... wrote:") ---------------------------------------------------------------
# Matched against one to three joined lines (clients wrap long headers). Strong patterns name the
# language's own opening word; weak ones only count when ">" quoted lines follow.
_STRONG_HEADERS = [
    r"(?:on|at)\b.{1,300}\bwrote\s?:",  # en
    r"am\b.{1,300}\bschrieb\b.{0,300}:",  # de
    r"le\b.{1,300}\ba\s+écrit\s?:",  # fr
    r"el\b.{1,300}\bescribió\s?:",  # es
    r"il\b.{1,300}\bha\s+scritto\s?:",  # it
    r"(?:em|no dia|a)\b.{1,300}\bescreveu\s?:",  # pt
    r"op\b.{1,300}\b(?:schreef|geschreven)\b.{0,150}:",  # nl
    r".{0,150}\d.{0,150}\bskrev\b.{0,300}:",  # da, no, sv: "Den 24. nov. 2025 kl. 10.00 skrev X:"
    r"(?:dnia|w dniu|użytkownik|.{0,150}\d).{1,300}\bnapisał(?:\(a\)|a)?\s?:",  # pl
    r"(?:dne|.{0,150}\d).{1,300}\bnapsal(?:\(a\)|a)?\s?:",  # cs
    r".{1,300}\bkirjoitti\s?:",  # fi
    r".{1,300}\b(?:пишет|написал|написала|написал\(а\))\s?:",  # ru, uk
    r".{1,300}\byazdı\s?:",  # tr
    r"\d{4}\s?年.{0,300}(?:@|書きました|メッセージ).{0,150}[:：]",  # ja (Gmail, Outlook)
    r".{0,300}(?:写道|寫道)\s?[:：]",  # zh
    r".{0,300}(?:작성|님이 씀)\s?[:：]",  # ko
    r"(?:בתאריך|ב-).{0,300}@.{0,150}:|.{0,300}(?:כתב|כתבה|כתב/ה)\s?:",  # he
    r".{0,300}كتب\s?:",  # ar
]
_WEAK_HEADERS = [
    r".{1,300}\b(?:wrote|writes|schrieb|a écrit|escribió|ha scritto|escreveu|schreef|skrev|napisał)\s?:",
    r".{0,300}\d.{0,300}<[^<>\s@]+@[^<>\s]+>\s?[:：]",  # any language: date ... <address>:
]
_STRONG_HEADER = re.compile("|".join(f"(?:{p})" for p in _STRONG_HEADERS), re.IGNORECASE)
_WEAK_HEADER = re.compile("|".join(f"(?:{p})" for p in _WEAK_HEADERS), re.IGNORECASE)

# --- separators and forwarded-message markers -----------------------------------------------------
_ORIGINAL_MESSAGE = re.compile(
    r"[-=_*]{2,}\s*(?:original message|original-nachricht|ursprüngliche nachricht|message d'origine"
    r"|message original|mensaje original|mensagem original|messaggio originale|oorspronkelijk bericht"
    r"|origineel bericht|oprindelig meddelelse|opprinnelig melding|ursprungligt meddelande"
    r"|originalmeddelande|wiadomość oryginalna|oryginalna wiadomość|původní zpráva|pôvodná správa"
    r"|alkuperäinen viesti|eredeti üzenet|исходное сообщение|оригинальное сообщение|原始邮件|原始郵件"
    r"|元のメッセージ|원본 메시지|forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado|messaggio inoltrato|mensagem encaminhada|doorgestuurd bericht"
    r"|videresendt meddelelse|videresendt melding|vidarebefordrat meddelande|przekazana wiadomość"
    r"|přeposlaná zpráva|転送メッセージ|转发的邮件)\s*[-=_*]{2,}"
    r"|(?:begin forwarded message|anfang der weitergeleiteten nachricht|début du message réexpédié"
    r"|inicio del mensaje reenviado|inizio messaggio inoltrato|begin doorgestuurd bericht"
    r"|start på videresendt besked|vidarebefordrat brev|転送されたメッセージ)\s?:",
    re.IGNORECASE,
)
_SEPARATOR_LINE = re.compile(r"[-_=*~—–]{4,}")

# --- Outlook-style header blocks ------------------------------------------------------------------
_FROM_FIELDS = (
    "from|von|de|van|fra|från|od|da|lähettäjä|от|feladó|kimden|remitente|expéditeur|afzender"
    "|avsändare|nadawca|odesílatel|差出人|发件人|發件人|寄件者|보낸 사람|מאת"
)
_OTHER_FIELDS = (
    "sent|date|to|subject|cc|bcc|reply-to|organization|gesendet|datum|an|betreff|kopie|envoyé|à|objet"
    "|verzonden|aan|onderwerp|sendt|dato|til|emne|kopi|skickat|till|ämne|wysłano|data|do|temat|kopia"
    "|inviato|a|oggetto|enviado|enviada|fecha|para|asunto|assunto|lähetetty|päivämäärä|vastaanottaja"
    "|aihe|отправлено|дата|кому|тема|копия|送信日時|宛先|件名|日付|发送时间|日期|收件人|主题|抄送"
    "|傳送時間|收件者|主旨|副本|보낸 날짜|받는 사람|제목|נשלח|תאריך|אל|נושא|odesláno|komu|předmět"
)
_FIELD_LINE = re.compile(rf"\**\s*({_FROM_FIELDS}|{_OTHER_FIELDS})\s*\**\s?[:：]", re.IGNORECASE)
_FROM_FIELD = re.compile(rf"(?:{_FROM_FIELDS})", re.IGNORECASE)

# --- signatures -----------------------------------------------------------------------------------
_SIGNATURE_DELIMITER = re.compile(r"--\s?|—|__")
_MOBILE_FOOTER = re.compile(
    r"(?:sent from (?:my|mail for|outlook|yahoo mail)|sent with|get outlook for|envoyé de mon|envoyé depuis mon|envoyé avec"
    r"|von meinem .{1,40} gesendet|gesendet von meinem|gesendet mit|verstuurd vanaf mijn|verzonden vanaf mijn"
    r"|verzonden met|skickat från min|sendt fra min|sendt fra mi|wysłane z mojego|wysłano z mojego"
    r"|enviado desde mi|enviado do meu|enviado de meu|inviato da|odesláno z|lähetetty|отправлено с"
    r"|发自我的|從我的|נשלח מ)",
    re.IGNORECASE,
)
_CLOSINGS = (
    # en
    "best regards|kind regards|warm regards|warmest regards|regards|best wishes|best|cheers|thanks|thank you"
    "|thanks again|many thanks|thanks in advance|thx|sincerely|yours sincerely|yours truly|yours faithfully"
    "|all the best|take care|br"
    # de
    "|mit freundlichen grüßen|mit freundlichen grüssen|freundliche grüße|freundliche grüsse|beste grüße"
    "|beste grüsse|viele grüße|viele grüsse|liebe grüße|liebe grüsse|herzliche grüße|schöne grüße"
    "|grüße|grüsse|gruß|gruss|mfg|lg|vg|danke|vielen dank"
    # da, no, sv
    "|med venlig hilsen|venlig hilsen|vh|mvh|hilsen|bedste hilsner|de bedste hilsner|kh|kærlig hilsen|tak"
    "|på forhånd tak|med vennlig hilsen|vennlig hilsen|med vänliga hälsningar|vänliga hälsningar"
    "|med vänlig hälsning|vänlig hälsning|hälsningar|tack|tack på förhand"
    # nl
    "|met vriendelijke groet|met vriendelijke groeten|vriendelijke groet|vriendelijke groeten"
    "|hartelijke groet|hartelijke groeten|groet|groeten|mvg|bedankt|alvast bedankt"
    # fr, es, it, pt
    "|cordialement|bien cordialement|très cordialement|salutations|meilleures salutations"
    "|sincères salutations|bien à vous|bien à toi|amicalement|merci|merci beaucoup|merci d'avance"
    "|saludos|un saludo|saludos cordiales|atentamente|cordialmente|gracias|muchas gracias|un abrazo"
    "|cordiali saluti|distinti saluti|saluti|un saluto|grazie|grazie mille"
    "|atenciosamente|cumprimentos|abraços|obrigado|obrigada"
    # pl, cs, fi, ru
    "|pozdrawiam|pozdrawiam serdecznie|serdecznie pozdrawiam|z poważaniem|z powazaniem|pozdrowienia"
    "|dziękuję|dziekuje|s pozdravem|s úctou|děkuji|ystävällisin terveisin|terveisin|kiitos"
    "|с уважением|спасибо|всего доброго|всего наилучшего"
    # ja, zh, ko, he, ar
    "|(?:以上、?\\s?)?(?:よろしく|宜しく)お願い(?:いた|致)?します|以上です|敬具"
    "|此致|此致敬礼|祝好|谢谢|謝謝|顺祝商祺|敬上|감사합니다|고맙습니다|בברכה|בברכה רבה|תודה|תודה רבה"
    "|مع التحية|شكرا"
)
# A closing alone on its line, optionally followed by ", Name" ("Thanks, Anna").
_CLOSING = re.compile(
    rf"(?i:{_CLOSINGS})[\s,.!:;。、～~]*(?:[A-Z][\w.'’-]*(?:\s[A-Z][\w.'’-]*){{0,2}}[.!]?)?"
)
_DASH_NAME = re.compile(r"[-–—]\s?[A-Z][\w.'’-]*(?:\s[\w.'’-]+){0,3}")
_LIST_ITEM = re.compile(r"[-*•–]\s")
_DISCLAIMER = re.compile(
    r"(?:disclaimer\b|confidentiality notice|confidential(?:ity)?\s*:|this (?:e-?mail|message|communication)"
    r"(?: and any (?:files|attachments).{0,40})? (?:is|are|may (?:be|contain)) (?:confidential|intended|privileged)"
    r"|the information (?:contained )?in this (?:e-?mail|message|communication)"
    r"|diese e-?mail (?:enthält|kann) vertrauliche|ce (?:message|courriel) (?:et|est) .{0,40}confidenti)",
    re.IGNORECASE,
)
_BANNER = re.compile(
    r"(?:\[external\]|(?:caution|warning|attention|notice|external)\b).{0,200}"
    r"(?:from outside|from an external|external sender|outside (?:of )?(?:the|this|your|our) (?:organi[sz]ation|company))",
    re.IGNORECASE,
)

#: How many non-blank lines may follow a line for it to still start a signature.
_SIGNATURE_TAIL = {"separator": 15, "closing": 6, "name": 10, "dash_name": 4, "mobile": 3}


@dataclasses.dataclass(frozen=True)
class ReplyParts:
    """The pieces of one message's text."""

    #: The new text the sender wrote, without quoted history or signature.
    reply: str
    #: The sign-off, contact block, device footer or disclaimer under the reply.
    signature: str
    #: The quoted history (quote headers, ">" lines, forwarded or original messages).
    quote: str
    #: Reply plus signature: everything that is not quoted history.
    unquoted: str


def split_reply(text: str, sender_name: str | None = None) -> ReplyParts:
    """Split `text` into reply, signature and quoted history; `sender_name` helps find the signature."""
    lines = (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    quoted = [_is_quoted(line) for line in lines]
    kept = _reply_line_numbers(lines, quoted)
    unquoted_lines = _assemble(lines, kept)
    body_lines = _without_banner(unquoted_lines)
    start = _signature_start(body_lines, sender_name)
    reply_lines = body_lines if start is None else body_lines[:start]
    signature_lines = [] if start is None else body_lines[start:]
    kept_set = set(kept)
    quote_lines = [line for number, line in enumerate(lines) if number not in kept_set]
    return ReplyParts(
        reply=_join(reply_lines),
        signature=_join(signature_lines),
        quote=_join(quote_lines),
        unquoted=_join(unquoted_lines),
    )


def _reply_line_numbers(lines: list[str], quoted: list[bool]) -> list[int]:
    """Return the numbers of the lines that belong to the new message (reply and signature)."""
    marker = _find_marker(lines, quoted, 0)
    first_quoted = next((n for n, is_quoted in enumerate(quoted) if is_quoted), None)
    if marker is None and first_quoted is None:
        return list(range(len(lines)))
    if marker is not None and (first_quoted is None or marker[0] <= first_quoted):
        cut, after = marker[0], marker[1] + 1
    else:
        cut = after = first_quoted
    top = list(range(cut))
    following = next((n for n in range(after, len(lines)) if _plain(lines[n])), None)
    quote_block_follows = following is not None and quoted[following]
    has_top = any(_plain(lines[n]) for n in top)
    if has_top and not quote_block_follows:
        # Top posting over unquoted history (Outlook, Apple Mail): everything below is history.
        return top
    # Bottom posting, interleaved answers, or a header block above the reply: keep the unquoted
    # lines up to the next quote header.
    next_marker = _find_marker(lines, quoted, after)
    stop = next_marker[0] if next_marker is not None else len(lines)
    if has_top:
        # Under a top-posted reply, only text between quoted blocks is an answer; what trails the
        # last quoted line is a list footer or older history.
        stop = max((n for n in range(after, stop) if quoted[n]), default=after)
    return top + [n for n in range(after, stop) if not quoted[n]]


def _find_marker(lines: list[str], quoted: list[bool], start: int) -> tuple[int, int] | None:
    """Return (first, last) line numbers of the first quote header at or after `start`."""
    for number in range(start, len(lines)):
        if quoted[number]:
            continue
        line = _plain(lines[number])
        if not line:
            continue
        if _ORIGINAL_MESSAGE.fullmatch(line.strip("* ")):
            return number, number
        block = _outlook_block(lines, quoted, number)
        if block is not None:
            first = _separator_above(lines, number, start)
            return (first if first is not None else number), block
        if line.rstrip("* ").endswith((":", "：")):
            header_start = _wrote_header_start(lines, quoted, number, start)
            if header_start is not None:
                return header_start, number
    return None


def _wrote_header_start(lines: list[str], quoted: list[bool], end: int, floor: int) -> int | None:
    """Return where an "On ... wrote:" header ending on line `end` begins, or None if it is not one."""
    spans = []
    for begin in range(end, max(floor, end - 2) - 1, -1):
        span = [_plain(lines[n]) for n in range(begin, end + 1)]
        if any(not line for line in span) or any(quoted[begin : end + 1]):
            break
        joined = " ".join(span).replace("*", "")
        if len(joined) > 500:
            break
        spans.append((begin, joined))
    # The closest start wins, but a language's own pattern beats a generic one ("On <date>, <name>"
    # / "<address>" / "wrote:" over three lines is one header, not a sentence plus "<address> wrote:").
    for begin, joined in spans:
        if _STRONG_HEADER.fullmatch(joined):
            return begin
    following = next((n for n in range(end + 1, len(lines)) if _plain(lines[n])), None)
    if following is not None and quoted[following]:
        for begin, joined in spans:
            if _WEAK_HEADER.fullmatch(joined):
                return begin
    return None


def _outlook_block(lines: list[str], quoted: list[bool], start: int) -> int | None:
    """Return the last line of an Outlook-style header block starting at `start`, or None."""
    if not _FIELD_LINE.match(_plain(lines[start])):
        return None
    fields = []
    last = start
    continuation_allowed = False
    blanks = 0
    for number in range(start, len(lines)):
        if quoted[number]:
            break
        line = _plain(lines[number])
        if not line:
            # HTML bodies turned into text put each header field in its own paragraph.
            blanks += 1
            continuation_allowed = False
            if blanks > 1:
                break
            continue
        blanks = 0
        match = _FIELD_LINE.match(line)
        if match:
            fields.append(match.group(1))
            last = number
            continuation_allowed = True
        elif continuation_allowed:
            last = number
            continuation_allowed = False  # one wrapped line per field (long To: lists, "On Behalf Of")
        else:
            break
    if len(fields) < 2 or not any(_FROM_FIELD.fullmatch(name) for name in fields):
        return None
    return last


def _separator_above(lines: list[str], number: int, floor: int) -> int | None:
    """Return the separator line (underscores, dashes) just above an Outlook block, if any."""
    for above in range(number - 1, max(floor, number - 3) - 1, -1):
        line = _plain(lines[above])
        if not line:
            continue
        return above if _SEPARATOR_LINE.fullmatch(line) else None
    return None


def _assemble(lines: list[str], numbers: list[int]) -> list[str]:
    """Return the chosen lines, with one blank line where quoted text was cut out between them."""
    result: list[str] = []
    previous = None
    joining = False
    for number in numbers:
        line = lines[number]
        if previous is not None and number != previous + 1:
            joining = True
            if result and _plain(result[-1]):
                result.append("")
        previous = number
        if joining and not _plain(line) and (not result or not _plain(result[-1])):
            continue
        joining = False
        result.append(line)
    return result


def _without_banner(lines: list[str]) -> list[str]:
    """Drop a leading "this email came from outside" banner paragraph."""
    content = [n for n, line in enumerate(lines) if _plain(line)]
    if not content or not _BANNER.match(_plain(lines[content[0]])):
        return lines
    end = content[0]
    while end < len(lines) and _plain(lines[end]):
        end += 1
    rest = lines[end:]
    return rest if any(_plain(line) for line in rest) else lines


def _signature_start(lines: list[str], sender_name: str | None) -> int | None:
    """Return the number of the line where the signature begins, or None."""
    content = [n for n, line in enumerate(lines) if _plain(line)]
    names = _name_variants(sender_name)
    for position, number in enumerate(content[1:], start=1):
        line = _plain(lines[number])
        tail = len(content) - position - 1
        next_line = _plain(lines[content[position + 1]]) if tail else ""
        previous = _plain(lines[content[position - 1]])
        if _SIGNATURE_DELIMITER.fullmatch(line) or _DISCLAIMER.match(line):
            return number
        if _SEPARATOR_LINE.fullmatch(line) and tail <= _SIGNATURE_TAIL["separator"]:
            return number
        if _is_mobile_footer(line) and tail <= _SIGNATURE_TAIL["mobile"]:
            return number
        if _CLOSING.fullmatch(line) and (
            tail <= _SIGNATURE_TAIL["closing"] or _SEPARATOR_LINE.fullmatch(next_line)
        ):
            return number
        if names and tail <= _SIGNATURE_TAIL["name"] and _starts_with_name(line, names):
            return number
        if (
            _DASH_NAME.fullmatch(line)
            and tail <= _SIGNATURE_TAIL["dash_name"]
            and not _LIST_ITEM.match(previous)
            and not previous.startswith("-")
        ):
            return number
    return None


def _is_mobile_footer(line: str) -> bool:
    # "Sent from my iPhone" is a footer; "Sent from my desk, which is easier" is a sentence.
    is_footer = bool(_MOBILE_FOOTER.match(line)) or line.endswith(("から送信", "から送信しました"))
    return is_footer and len(line) <= 80 and not re.search(r"[,;]\s", line)


def _name_variants(sender_name: str | None) -> tuple[str, ...]:
    name = " ".join((sender_name or "").replace('"', "").split())
    if "@" in name or len(name) < 3:
        return ()
    variants = [name]
    if "," in name:  # "Doe, John" signs as "John Doe"
        last, _, first = name.partition(",")
        variants.append(f"{first.strip()} {last.strip()}")
    return tuple(variant.casefold() for variant in variants if variant.strip())


def _starts_with_name(line: str, names: tuple[str, ...]) -> bool:
    bare = line.lstrip("-–—~ ").casefold()
    return any(bare == name or bare.startswith((name + " ", name + ",")) for name in names)


def _join(lines: list[str]) -> str:
    """Return `lines` as text without leading or trailing blank lines; lines stay as written."""
    start, end = 0, len(lines)
    while start < end and not _plain(lines[start]):
        start += 1
    while end > start and not _plain(lines[end - 1]):
        end -= 1
    return "\n".join(lines[start:end])
