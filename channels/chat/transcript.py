"""A chat written out as plain text, for the transcript a visitor asks to get by email; pure."""

from __future__ import annotations

import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class TranscriptLine:
    at: dt.datetime
    #: "You" for the visitor, the agent's name for a reply.
    speaker: str
    text: str
    #: Names of the files sent with the message.
    files: tuple[str, ...] = ()


def format_transcript(lines: list[TranscriptLine], *, ticket_number: int, team: str) -> str:
    """Return the conversation as plain text: one block per message, oldest first, times in UTC."""
    out = [f"Here is the transcript of your chat with {team} (ticket #{ticket_number}).", ""]
    for line in lines:
        stamp = line.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        out.append(f"[{stamp}] {line.speaker}:")
        text = line.text.strip()
        if text:
            out.extend(f"  {row}" for row in text.splitlines())
        out.extend(f"  (file: {name})" for name in line.files)
        out.append("")
    if not lines:
        out.append("(no messages)")
        out.append("")
    out.append("You can answer this email to continue the conversation.")
    return "\n".join(out)
